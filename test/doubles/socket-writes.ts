// Writes a socket makes to the kernel, counted: each call of its _write or _writev is one (Node's net.Socket).
import type { Socket } from 'node:net';

/** How many writes `socket` makes to the kernel from now on. */
export function countWrites(socket: Socket): () => number {
  let writes = 0;
  const s = socket as unknown as Record<'_write' | '_writev', (...args: unknown[]) => unknown>;
  for (const method of ['_write', '_writev'] as const) {
    const original = s[method].bind(socket);
    s[method] = (...args: unknown[]) => {
      writes++;
      return original(...args);
    };
  }
  return () => writes;
}
