/** A hook that loads data now and again every few seconds while the tab is visible. */
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from './api.js';

/** What {@link usePoll} returns. */
export interface Polled<T> {
  data: T | null;
  error: ApiError | null;
  /** Loads again now (after an action). */
  reload: () => void;
}

/**
 * Calls `load` at once and every `intervalMs` (skipped while the tab is hidden); `deps` restart it.
 * The last good data stays while an error is shown.
 */
export function usePoll<T>(load: (signal: AbortSignal) => Promise<T>, intervalMs: number, deps: readonly unknown[]): Polled<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  const reload = useCallback(() => setTick((n) => n + 1), []);

  useEffect(() => {
    setData(null);
    setError(null);
  }, deps);

  useEffect(() => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      if (document.visibilityState !== 'hidden') {
        try {
          const value = await loadRef.current(controller.signal);
          if (controller.signal.aborted) return;
          setData(value);
          setError(null);
        } catch (err) {
          if (controller.signal.aborted) return;
          setError(err instanceof ApiError ? err : new ApiError(0, 'INTERNAL', err instanceof Error ? err.message : String(err)));
        }
      }
      if (!controller.signal.aborted && intervalMs > 0) timer = setTimeout(() => void run(), intervalMs);
    };
    void run();
    return () => {
      controller.abort();
      clearTimeout(timer);
    };
  }, [...deps, tick, intervalMs]);

  return { data, error, reload };
}
