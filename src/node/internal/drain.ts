/**
 * The HTTP drain of a Node worker, with no code of its own: the part of the
 * preload (see `preload.ts`) that serves the supervisor's sockets, says when
 * the worker listens, and drains its HTTP servers on SIGTERM. It is source
 * text, run in the worker before its own code, in its main thread, only in a
 * process whose parent is the primary.
 *
 * - **Servers** are found by wrapping `net.Server.prototype.listen` (every
 *   `http`, `https`, `http2` and raw `net` server listens through it): the
 *   wrapper records the server and calls the real `listen`.
 * - **`listen(port)` serves the supervisor's socket.** In a worker handed
 *   sockets (`LISTEN_PID` is its pid), a `listen(port[, host])`,
 *   `listen({ port, host })` or `listen(path)` on the address of one of them
 *   becomes `listen({ fd })`: as node:cluster routes a worker's `listen` to
 *   its primary, an unmodified app serves the owned socket. The port must be
 *   the socket's; an omitted host, `0.0.0.0` or `::` matches any host, a
 *   named one matches the same host or a wildcard socket (`localhost` is
 *   `127.0.0.1` or `::1`). Each socket is given to one `listen` of the
 *   process; any other `listen` is left alone. The addresses come in
 *   {@link ADDRESSES_VAR} (names in `LISTEN_FDNAMES` may be anything).
 * - **Readiness.** When a server starts listening on one of those sockets
 *   (on any address, in a worker with none) the worker sends
 *   `{ type: "effect-prefork/listening" }` once over its IPC channel.
 * - **The drain**, armed when the first HTTP server (`http`, `https`,
 *   `http2`) listens: a worker with no HTTP server keeps Node's default
 *   SIGTERM (it dies of it). On SIGTERM, after the worker's own SIGTERM
 *   listeners ran (one turn later), each HTTP server still listening stops
 *   accepting (`net.Server.prototype.close`: not `http.Server#close`, which
 *   would also destroy every idle keep-alive connection at once, racing a
 *   request the client may have sent already). Then:
 *   - a request in flight whose head is not written yet is answered with
 *     `Connection: close`, and so is every request that arrives later;
 *     Node then ends the connection once that response is written;
 *   - a connection with no request in flight is closed once it has been
 *     quiet for {@link IDLE_MS}, counted from the drain's start or its last
 *     response: a client that reuses it meanwhile gets its answer, with
 *     `Connection: close`;
 *   - HTTP/2 sessions get GOAWAY (`session.close()`), which lets their open
 *     streams finish;
 *   - upgraded connections (WebSockets) and raw TCP servers are left alone.
 *   Until SIGTERM the drain does nothing per request: it notes each
 *   connection (one listener per server, one per connection), and finds
 *   the request in flight on a connection when the drain starts (the
 *   response Node is writing on it, `socket._httpMessage`). A listener for
 *   requests is added only then.
 *   When no HTTP server listens and no HTTP connection is left, a worker
 *   with no SIGTERM listener of its own kills itself with SIGTERM again, by
 *   Node's default action: it ends `Signaled{SIGTERM}`, as it would have at
 *   once without the drain. A worker with a listener of its own is left to
 *   it (it may exit, or end when nothing is left to do).
 * - While draining it sends `{ type: "effect-prefork/draining", connections }`
 *   when that number changes, so that a supervisor that kills it at the stop
 *   timeout can say what was cut.
 *
 * @internal
 */
import type * as Listen from "../../Listen.ts"

/** The variable naming the addresses of a worker's sockets: a JSON list of `{ fd, host, port }` or `{ fd, path }`. */
export const ADDRESSES_VAR = "PREFORK_LISTEN_ADDRESSES"

/** How long a keep-alive connection must be quiet before a draining worker closes it, in milliseconds. */
export const IDLE_MS = 500

/**
 * The sockets' addresses for {@link ADDRESSES_VAR}, in descriptor order from
 * 3 (empty without sockets).
 *
 * @internal
 */
export const environment = (sockets: ReadonlyArray<Listen.Socket>): Record<string, string> =>
  sockets.length === 0
    ? {}
    : {
        [ADDRESSES_VAR]: JSON.stringify(
          sockets.map(({ address }, i) =>
            address._tag === "Unix"
              ? { fd: 3 + i, path: address.path }
              : { fd: 3 + i, host: address.host, port: address.port }
          )
        )
      }

/**
 * The module-level import the drain needs: put first in the preload.
 *
 * @internal
 */
export const imports = `import net from "node:net";`

/**
 * The drain's statements, to run inside the preload's check that the
 * primary is the worker's parent. Plain JavaScript for every supported
 * Node; no backquote, `%` or `#`, and a `;` after every statement (the
 * preload may be joined on one line).
 *
 * @internal
 */
export const source = `{
const env = process.env;
const owned = [];
if (env.LISTEN_PID === String(process.pid)) {
  try {
    const list = JSON.parse(env.${ADDRESSES_VAR} ?? "[]");
    if (Array.isArray(list)) for (const a of list) if (a !== null && typeof a === "object" && Number.isSafeInteger(a.fd)) owned.push(a);
  } catch {}
}
const used = new Set();
const send = (message) => {
  if (typeof process.send !== "function" || !process.connected) return;
  try { process.send(message, undefined, undefined, () => {}); } catch {}
};
const wildcard = (h) => h === undefined || h === null || h === "" || h === "0.0.0.0" || h === "::" || h === "[::]";
const sameHost = (want, have) =>
  wildcard(want) || wildcard(have) || want === have || (want === "localhost" && (have === "127.0.0.1" || have === "::1"));
const target = (args) => {
  const first = args[0], second = args[1];
  let port, host, path;
  if (first !== null && typeof first === "object") {
    if (first.fd !== undefined || first.handle !== undefined || first._handle !== undefined) return undefined;
    if (typeof first.path === "string") path = first.path;
    else if (first.port !== undefined) { port = Number(first.port); host = first.host; }
    else return undefined;
  } else if (typeof first === "number" || (typeof first === "string" && /^[0-9]+$/.test(first))) {
    port = Number(first);
    if (typeof second === "string") host = second;
  } else if (typeof first === "string") path = first;
  else return undefined;
  return owned.find((o) =>
    !used.has(o.fd) && (path !== undefined ? o.path === path : port > 0 && o.port === port && sameHost(host, o.host)));
};
const ownedFd = (args) => {
  const first = args[0];
  if (first === null || typeof first !== "object" || !Number.isSafeInteger(first.fd)) return undefined;
  return owned.find((o) => o.fd === first.fd);
};
let announced = false;
const servers = new Set();
const known = new WeakSet();
let draining = false, armed = false, reported = -1, reporting = false;
const CONN = Symbol("effect-prefork/connection");
const kindOf = (server) =>
  typeof server.closeIdleConnections === "function" ? "http"
  : server.constructor !== undefined && /^Http2(Secure)?Server$/.test(server.constructor.name) ? "http2"
  : undefined;
const count = () => {
  let n = 0;
  for (const s of servers) n += s.conns.size + s.sessions.size;
  return n;
};
const report = () => {
  if (reporting) return;
  reporting = true;
  setImmediate(() => {
    reporting = false;
    const n = count();
    if (n !== reported) { reported = n; send({ type: "effect-prefork/draining", connections: n }); }
  });
};
const finish = () => {
  for (const s of servers) if (s.server.listening || s.conns.size > 0 || s.sessions.size > 0) return report();
  report();
  process.off("SIGTERM", onTerm);
  if (process.listenerCount("SIGTERM") === 0) process.kill(process.pid, "SIGTERM");
};
const settle = (s, c) => {
  clearTimeout(c.timer);
  c.timer = undefined;
  if (!draining || c.active > 0) return;
  if (c.socket._httpMessage) { c.timer = setTimeout(() => settle(s, c), 50); return; }
  if (!c.socket.parser) { s.conns.delete(c); return finish(); }
  const wait = ${IDLE_MS} - (performance.now() - c.idleSince);
  if (wait <= 0) c.socket.destroy();
  else c.timer = setTimeout(() => settle(s, c), wait);
};
const follow = (s, c, res) => {
  if (!res.headersSent) res.shouldKeepAlive = false;
  c.active++;
  clearTimeout(c.timer);
  c.timer = undefined;
  res.once("close", () => {
    c.active--;
    c.idleSince = performance.now();
    settle(s, c);
  });
};
const onTerm = () => {
  if (draining) return;
  draining = true;
  setImmediate(() => {
    const at = performance.now();
    for (const s of servers) {
      if (s.server.listening) net.Server.prototype.close.call(s.server);
      for (const session of s.sessions) { try { session.close(); } catch {} }
      if (s.kind !== "http") continue;
      s.server.prependListener("request", (req, res) => {
        const c = req.socket[CONN];
        if (c !== undefined && s.conns.has(c)) follow(s, c, res);
        else if (!res.headersSent) res.shouldKeepAlive = false;
      });
      for (const c of s.conns) {
        c.idleSince = at;
        const res = c.socket._httpMessage;
        if (res) follow(s, c, res);
        settle(s, c);
      }
    }
    finish();
  });
};
const arm = (server, kind) => {
  const s = { server, kind, conns: new Set(), sessions: new Set() };
  servers.add(s);
  if (!armed) { armed = true; process.on("SIGTERM", onTerm); }
  server.on("close", () => { if (draining) finish(); });
  if (kind === "http2") {
    server.on("session", (session) => {
      s.sessions.add(session);
      if (draining) { try { session.close(); } catch {} }
      session.once("close", () => { s.sessions.delete(session); if (draining) finish(); });
    });
    return;
  }
  server.on(typeof server.setSecureContext === "function" ? "secureConnection" : "connection", (socket) => {
    const c = { socket, active: 0, idleSince: 0, timer: undefined };
    s.conns.add(c);
    socket[CONN] = c;
    socket.once("close", () => {
      clearTimeout(c.timer);
      if (s.conns.delete(c) && draining) finish();
    });
    if (draining) { c.idleSince = performance.now(); settle(s, c); }
  });
};
const track = (server, fd) => {
  server.once("listening", () => {
    if (!announced && (owned.length === 0 || fd !== undefined)) { announced = true; send({ type: "effect-prefork/listening" }); }
  });
  if (known.has(server)) return;
  known.add(server);
  const kind = kindOf(server);
  if (kind !== undefined) arm(server, kind);
};
const realListen = net.Server.prototype.listen;
net.Server.prototype.listen = function listen(...args) {
  const found = target(args);
  if (found === undefined) {
    try { track(this, ownedFd(args)?.fd); } catch {}
    return realListen.apply(this, args);
  }
  used.add(found.fd);
  try { track(this, found.fd); } catch {}
  const options = { fd: found.fd };
  const first = args[0];
  if (first !== null && typeof first === "object") {
    if (first.backlog !== undefined) options.backlog = first.backlog;
    if (first.signal !== undefined) options.signal = first.signal;
  }
  const last = args[args.length - 1];
  return typeof last === "function" ? realListen.call(this, options, last) : realListen.call(this, options);
};
}`
