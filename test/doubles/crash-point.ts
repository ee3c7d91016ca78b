// A process killed at one call: the call never returns, nor does anything after it, as after a SIGKILL there. What
// it had written stays; what it would have written next never is. (Tests of "a bot that dies between A and B".)

/**
 * Make `target[method]` hang for the calls `dies` picks (its `this` and arguments; every call by default); the others
 * run as before. `reached` settles when one hangs; `restore()` puts the method back.
 */
export function dieAt<T extends object>(target: T, method: keyof T & string, dies: (self: unknown, ...args: unknown[]) => boolean = () => true): { reached: Promise<void>; restore(): void } {
  const original = target[method] as (...args: unknown[]) => unknown;
  let entered!: () => void;
  const reached = new Promise<void>((r) => (entered = r));
  (target as Record<string, unknown>)[method] = function (this: unknown, ...args: unknown[]) {
    if (!dies(this, ...args)) return original.apply(this, args);
    entered();
    return new Promise<never>(() => undefined);
  };
  return { reached, restore: () => void ((target as Record<string, unknown>)[method] = original) };
}
