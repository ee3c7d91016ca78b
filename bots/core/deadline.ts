// Waiting with a deadline, for the few answers a chat platform needs within seconds (Discord's 3 s to defer, the
// usage report's names): the answer if it came in time, else undefined, and the work goes on.

/** `promise`'s value if it settles within `ms`, else undefined (it goes on: await it again for the value). */
export async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => (timer = setTimeout(resolve, ms, undefined)));
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}
