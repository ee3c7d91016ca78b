// A TCP proxy in front of Redis whose connections go silent once they send a blocking fetch (BZPOPMIN): the command
// reaches Redis, but nothing Redis says on that connection comes back, and the socket stays open. What a half-dead
// connection looks like to a BullMQ worker (a NAT or firewall that dropped the flow, a library that parked the
// promise): its fetch loop waits, its watchdog's reconnect opens a new connection that goes silent the same way, and
// no job is ever taken while every other connection of the process works. Test double for the fetch watchdog's exit.
import { createConnection, createServer, type Server, type Socket } from 'node:net';

export interface BlackholeProxy {
  port: number;
  /** Connections that went silent so far. */
  silenced(): number;
  close(): Promise<void>;
}

/** RESP names a command as a bulk string: `$8\r\nbzpopmin\r\n` (ioredis writes it in lower case; any case matches). */
const BLOCKING_FETCH = /\$8\r\nbzpopmin\r\n/i;

export async function startBlackholeProxy(target: { host: string; port: number }): Promise<BlackholeProxy> {
  const sockets = new Set<Socket>();
  let silenced = 0;
  const server: Server = createServer((client) => {
    const upstream = createConnection(target);
    sockets.add(client).add(upstream);
    let silent = false;
    client.on('data', (chunk: Buffer) => {
      if (!silent && BLOCKING_FETCH.test(chunk.toString('latin1'))) {
        silent = true;
        silenced++;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => void (silent || client.write(chunk)));
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    silenced: () => silenced,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
