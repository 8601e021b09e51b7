import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { AccessJournalReader, AccessJournalWriter } from '../../agent/router/access-journal.js';
import type { AccessEntry } from '../../agent/router/router.js';
import { silentLogger } from '../../common/logger.js';

function entry(path: string): AccessEntry {
  return { ts: 1, app: 'shop', method: 'GET', path, status: 200, durationMs: 1, instanceKey: null, bytes: 2, requestId: 'r', attempts: 1 };
}

describe('access journal', () => {
  it('hands each entry once, in order, across a reader restart (the agent restarting), from the saved offset', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'hangar-journal-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const journal = join(dir, 'access');
    const offsetFile = join(dir, 'access.offset');
    const writer = new AccessJournalWriter({ dir: journal, logger: silentLogger() });
    const seen: string[] = [];
    const reader = () =>
      new AccessJournalReader({ dir: journal, offsetFile, logger: silentLogger(), onEntries: (es) => seen.push(...es.map((e) => e.path)) });
    for (let i = 0; i < 3; i++) writer.append(entry(`/a${i}`));
    writer.flush();
    const first = reader();
    first.read();
    assert.deepEqual(seen, ['/a0', '/a1', '/a2']);
    // Written while no agent reads; a new reader resumes where the first stopped.
    for (let i = 0; i < 2; i++) writer.append(entry(`/b${i}`));
    writer.close();
    reader().read();
    assert.deepEqual(seen, ['/a0', '/a1', '/a2', '/b0', '/b1']);
    reader().read();
    assert.equal(seen.length, 5, 'nothing twice');
  });

  it('waits for a partial last line, and moves to a newer segment once the old one is read, deleting it', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'hangar-journal-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const journal = join(dir, 'access');
    const seen: string[] = [];
    new AccessJournalWriter({ dir: journal, logger: silentLogger() }).close();
    writeFileSync(join(journal, '0000000001.jsonl'), `${JSON.stringify(entry('/old'))}\n${JSON.stringify(entry('/half')).slice(0, 10)}`);
    const reader = new AccessJournalReader({
      dir: journal,
      offsetFile: join(dir, 'access.offset'),
      logger: silentLogger(),
      onEntries: (es) => seen.push(...es.map((e) => e.path)),
    });
    reader.read();
    assert.deepEqual(seen, ['/old']);
    writeFileSync(join(journal, '0000000001.jsonl'), `${JSON.stringify(entry('/old'))}\n${JSON.stringify(entry('/half'))}\n`);
    writeFileSync(join(journal, '0000000002.jsonl'), `${JSON.stringify(entry('/new'))}\n`);
    // A writer that finds a newer segment writes there from then on.
    const writer = new AccessJournalWriter({ dir: journal, logger: silentLogger() });
    writer.append(entry('/newer'));
    writer.close();
    while (reader.read());
    assert.deepEqual(seen, ['/old', '/half', '/new', '/newer']);
    assert.deepEqual(readdirSync(journal), ['0000000002.jsonl']);
  });
});
