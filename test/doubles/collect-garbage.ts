// A full garbage collection on demand, for tests of waits that must not depend on what the collector keeps: a timer or
// an abort held only weakly (AbortSignal.timeout as a source of AbortSignal.any, undici's abort of a body) is lost.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** Collect now. `--expose-gc` is set at run time: gc() exists in the contexts made afterwards. */
export function collectGarbage(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}
