/**
 * An Effect HTTP server as a supervised worker, in one layer (see
 * {@link HttpWorker}). This entry point imports `@effect/platform-node`, an
 * optional peer dependency: install it beside `effect` to use it. The other
 * entry points (`effect-prefork`, `effect-prefork/node`,
 * `effect-prefork/testing`) never load it.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as HttpWorker from "./node/HttpWorker.ts"
