import type { StoredLogLine } from './log-store.js';

/** What a live subscriber wants (the same filters as a log query, without `n`). */
export interface LogFilter {
  app: string;
  /** A process type (`web`), an instance (`web.1`) or `router|build|release|hangar`. */
  source?: string;
  /** Case-insensitive (ASCII) substring. */
  grep?: string;
}

/** A live subscriber: gets every new matching line, in order, at once. It must never block. */
export interface LogSubscriber {
  filter: LogFilter;
  push(lines: StoredLogLine[]): void;
}

/** Whether a line passes a filter, with the same meaning as {@link LogStore.query}'s. */
export function matchesFilter(filter: LogFilter, line: StoredLogLine): boolean {
  if (line.app !== filter.app) return false;
  const s = filter.source;
  if (s && line.source !== s && !(!s.includes('.') && line.source.startsWith(`${s}.`))) return false;
  if (filter.grep && !line.line.toLowerCase().includes(filter.grep.toLowerCase())) return false;
  return true;
}

/**
 * Fans newly stored lines out to live subscribers (websocket clients). Publishing is synchronous
 * and cheap; each subscriber decides what to do when its client is slow (see log-stream-server).
 */
export class LogHub {
  readonly #byApp = new Map<string, Set<LogSubscriber>>();

  /** Adds a subscriber; returns its removal. */
  subscribe(subscriber: LogSubscriber): () => void {
    let set = this.#byApp.get(subscriber.filter.app);
    if (!set) {
      set = new Set();
      this.#byApp.set(subscriber.filter.app, set);
    }
    set.add(subscriber);
    return () => {
      set.delete(subscriber);
      if (set.size === 0 && this.#byApp.get(subscriber.filter.app) === set) this.#byApp.delete(subscriber.filter.app);
    };
  }

  /** Subscribers now (all apps). */
  get size(): number {
    let n = 0;
    for (const set of this.#byApp.values()) n += set.size;
    return n;
  }

  /** Hands stored lines to the subscribers whose filter they pass. */
  publish(lines: readonly StoredLogLine[]): void {
    if (this.#byApp.size === 0 || lines.length === 0) return;
    for (const [app, subscribers] of this.#byApp) {
      const ofApp = lines.filter((l) => l.app === app);
      if (ofApp.length === 0) continue;
      for (const sub of subscribers) {
        const matching = sub.filter.source || sub.filter.grep ? ofApp.filter((l) => matchesFilter(sub.filter, l)) : ofApp;
        if (matching.length > 0) sub.push(matching);
      }
    }
  }
}
