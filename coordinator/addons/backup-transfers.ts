/**
 * Backup files in transit through the coordinator: each transfer id is made for one agent and one
 * direction (it uploads to the path, or fetches from it) and forgotten once the job is over. The
 * hub asks here which path an agent's `UploadBackup`/`FetchBackup` call may use.
 */
import { randomUUID } from 'node:crypto';
import type { BackupTransferPaths } from '../fleet/agent-hub.js';

interface Transfer {
  agent: string;
  mode: 'upload' | 'fetch';
  path: string;
}

/** See the module comment. */
export class BackupTransfers implements BackupTransferPaths {
  readonly #transfers = new Map<string, Transfer>();

  /** A new transfer of `path` for `agent`; {@link close} it when the job is over. */
  open(agent: string, mode: Transfer['mode'], path: string): string {
    const id = randomUUID();
    this.#transfers.set(id, { agent, mode, path });
    return id;
  }

  close(id: string): void {
    this.#transfers.delete(id);
  }

  uploadPath(agent: string, transfer: string): string | null {
    const t = this.#transfers.get(transfer);
    return t && t.agent === agent && t.mode === 'upload' ? t.path : null;
  }

  fetchPath(agent: string, transfer: string): string | null {
    const t = this.#transfers.get(transfer);
    return t && t.agent === agent && t.mode === 'fetch' ? t.path : null;
  }
}
