// A port nothing listens on now, for a server a test starts from config: the schema refuses a port of 0 where
// something outside must reach it (slack.httpPort), so such tests cannot ask listen() for one.
import { createServer } from 'node:net';

/** A loopback port that was free a moment ago (another process could take it before the caller listens). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}
