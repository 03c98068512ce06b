/**
 * Text tables as `ps` and `docker ps` print them: a header row and body rows,
 * each column padded to its widest cell plus two spaces, the last one not
 * padded.
 *
 * @since 0.1.0
 */

/**
 * The rows aligned in columns, without a trailing newline.
 *
 * @since 0.1.0
 * @category formatting
 */
export const columns = (header: ReadonlyArray<string>, body: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => body.reduce((widest, cells) => Math.max(widest, cells[i]!.length), h.length))
  return [header, ...body]
    .map((cells) => cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]! + 2))).join(""))
    .join("\n")
}
