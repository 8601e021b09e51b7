/**
 * The grep index's worker thread: steps a {@link LogSearchIndex} until told to stop, so building
 * the trigram index (a few times the cost of storing a line) runs beside ingestion on another core
 * rather than inside its transactions. Started by {@link LogIndexer}; importing this file outside a
 * worker does nothing.
 */
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { LogSearchIndex } from './log-search.js';
import type { LogIndexerMessage, LogIndexerWorkerData } from './log-indexer.js';

/**
 * Lowers this thread's priority to the lowest (nice 19; Linux nices threads one by one): the index
 * takes spare CPU only, so it neither slows ingestion nor the apps of a server the coordinator
 * shares. Where that fails (not Linux), it runs at normal priority.
 */
function niceThisThread(): boolean {
  try {
    const tid = Number(/task\/(\d+)$/.exec(readlinkSync('/proc/thread-self'))?.[1]);
    if (!Number.isInteger(tid) || tid <= 0) return false;
    setPriority(tid, 19);
    return true;
  } catch {
    return false;
  }
}

function run(port: NonNullable<typeof parentPort>, data: LogIndexerWorkerData): void {
  let index: LogSearchIndex | null = null;
  let stopping = false;
  let timer: NodeJS.Timeout | null = null;
  const post = (m: LogIndexerMessage) => port.postMessage(m);
  if (data.nice) niceThisThread();
  const stop = () => {
    stopping = true;
    if (timer) clearTimeout(timer);
    index?.close();
    port.close();
  };
  port.on('message', (m: unknown) => {
    if (m === 'stop') stop();
  });
  const tick = () => {
    timer = null;
    if (stopping) return;
    let more = false;
    try {
      index ??= new LogSearchIndex({ sourcePath: data.sourcePath, path: data.path });
      const s = index.step(data.batchRows);
      more = s.indexed > 0 || s.unindexed > 0;
      post({ type: 'step', ...s });
    } catch (err) {
      // A full disk or a locked file: said to the main thread, tried again after the pause.
      const e = err as { code?: unknown; message?: unknown };
      post({ type: 'error', code: typeof e.code === 'string' ? e.code : '', message: String(e.message ?? err) });
    }
    // Straight on while there is a backlog (yielding to the port's messages), else a pause.
    timer = setTimeout(tick, more ? 0 : data.idleMs);
  };
  tick();
}

if (!isMainThread && parentPort) run(parentPort, workerData as LogIndexerWorkerData);
