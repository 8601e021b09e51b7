/**
 * The last desired state this agent was sent, kept on disk (sealed with the agent's own key: it
 * holds config values) so that a restarted agent adopts and keeps running it while the
 * coordinator is unreachable.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import type { Logger } from '../../common/logger.js';
import type { SecretBox } from '../../common/secret-box.js';
import type { DesiredState__Output } from '../../proto/loader.js';

/** The sealed desired-state file of one agent. */
export class DesiredStateCache {
  readonly #path: string;
  readonly #secrets: SecretBox;
  readonly #logger: Logger;
  /** Writes are serialized; only the newest snapshot matters. */
  #writing: Promise<void> = Promise.resolve();

  /**
   * @param path the file, e.g. DATA/desired-state.json
   * @param secrets seals and opens it
   */
  constructor(path: string, secrets: SecretBox, logger: Logger) {
    this.#path = path;
    this.#secrets = secrets;
    this.#logger = logger;
  }

  /** The cached snapshot; null when there is none or it cannot be opened. */
  async read(): Promise<DesiredState__Output | null> {
    try {
      return JSON.parse(this.#secrets.open(await readFile(this.#path, 'utf8'))) as DesiredState__Output;
    } catch {
      return null;
    }
  }

  /** Replaces the cached snapshot in the background (a failure is logged). */
  write(state: DesiredState__Output): void {
    this.#writing = this.#writing
      .then(async () => {
        const tmp = `${this.#path}.tmp`;
        await writeFile(tmp, this.#secrets.seal(JSON.stringify(state)), { mode: 0o600 });
        await rename(tmp, this.#path);
      })
      .catch((err: unknown) => this.#logger.error({ err }, 'could not cache desired state'));
  }

  /** Resolves once the writes asked for so far are done. Never rejects. */
  flush(): Promise<void> {
    return this.#writing;
  }
}
