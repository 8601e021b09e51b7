import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CronJobView, LogLineView } from '../../common/api-types.js';
import { systemClock, type Clock, type ClockTimer } from '../../common/clock.js';
import { FIXTURES, startCluster, waitFor, type Cluster } from '../helpers/cluster.js';
import { deployFixture } from '../helpers/deploy-fixture.js';

/** The coordinator's cron scheduler reads this clock: the test moves it by hand (its timers are real). */
class HandClock implements Clock {
  at: number;
  /** How often the scheduler asked the time (each of its turns asks once). */
  asked = 0;
  constructor(at: string) {
    this.at = Date.parse(at);
  }
  now(): number {
    this.asked++;
    return this.at;
  }
  setTimeout(fn: () => void, ms: number): ClockTimer {
    return systemClock.setTimeout(fn, ms);
  }
  clearTimeout(timer: ClockTimer): void {
    systemClock.clearTimeout(timer);
  }
}

async function cron(cluster: Cluster, app: string): Promise<Map<string, CronJobView>> {
  const res = await cluster.cli(['cron', '-a', app, '--json']);
  assert.equal(res.code, 0, res.stderr);
  return new Map((JSON.parse(res.stdout) as CronJobView[]).map((j) => [j.name, j]));
}

async function hangarLines(cluster: Cluster, app: string): Promise<LogLineView[]> {
  const res = await cluster.cli(['logs', '--source', 'hangar', '-n', '500', '-a', app, '--json']);
  assert.equal(res.code, 0, res.stderr);
  return res.stdout
    .split('\n')
    .filter((l) => l)
    .map((l) => JSON.parse(l) as LogLineView);
}

test(
  'cron: jobs of app.json fire runs on schedule, record exit codes, forbid overlaps, catch up or skip missed firings',
  { timeout: 600_000 },
  async (t) => {
    const clock = new HandClock('2030-01-01T03:00:30Z');
    const cluster = await startCluster(t, { agents: 1, coordinator: { cronIntervalMs: 100 }, cronClock: clock });

    // A bad schedule fails the deploy before anything is built, naming the entry.
    assert.equal((await cluster.cli(['apps:create', 'broken'])).code, 0);
    const source = join(cluster.dir, 'broken-source');
    await cp(join(FIXTURES, 'django-app'), source, { recursive: true });
    await writeFile(join(source, 'app.json'), JSON.stringify({ cron: [{ name: 'x', command: 'true', schedule: '61 * * * *' }] }));
    const bad = await cluster.cli(['deploy', source, '-a', 'broken']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /cron\.0\.schedule: "61 \* \* \* \*" is not a cron schedule: the minute field "61" has 61, outside 0-59/);
    assert.equal((await cluster.cli(['releases', '-a', 'broken', '--json'])).stdout.trim(), '[]');

    await deployFixture(cluster, 'shop', {
      appJson: {
        cron: [
          { name: 'tick', command: 'sh -c "echo tick-ran; exit 4"', schedule: '* * * * *' },
          { name: 'slow', command: 'sleep 600', schedule: '* * * * *' },
          { name: 'hourly', command: 'echo on-the-hour', schedule: '0 * * * *', timezone: 'Europe/Paris' },
        ],
      },
    });
    const listed = await cron(cluster, 'shop');
    assert.deepEqual([...listed.keys()], ['tick', 'slow', 'hourly']);
    assert.equal(listed.get('tick')?.nextRunAt, '2030-01-01T03:01:00.000Z');
    assert.equal(listed.get('hourly')?.timezone, 'Europe/Paris');
    assert.equal(listed.get('tick')?.lastRun, null);
    // Two turns of the scheduler after the release is current: its jobs count from 03:00:30.
    const asked = clock.asked;
    await waitFor('two turns of the scheduler', () => clock.asked >= asked + 2);

    clock.at = Date.parse('2030-01-01T03:01:05Z');
    const first = await waitFor('the first firings to run', async () => {
      const jobs = await cron(cluster, 'shop');
      const tick = jobs.get('tick')?.lastRun;
      return tick?.status === 'exited' && jobs.get('slow')?.lastRun?.status === 'running' ? jobs : null;
    });
    const tickRun = first.get('tick')?.lastRun;
    assert.equal(tickRun?.exitCode, 4);
    assert.equal(tickRun?.createdBy, 'cron');
    assert.equal(tickRun?.cronJob, 'tick');
    assert.ok((tickRun?.durationMs ?? -1) >= 0);
    assert.equal(first.get('hourly')?.lastRun, null);
    const tickLogs = await cluster.cli(['logs', '--source', tickRun?.name ?? '', '-a', 'shop']);
    assert.match(tickLogs.stdout, /app\[run\.\d+\]: tick-ran/);

    // The next minute: tick runs again, slow is still running, so its firing is skipped.
    clock.at = Date.parse('2030-01-01T03:02:05Z');
    await waitFor('the skipped firing of slow', async () =>
      (await hangarLines(cluster, 'shop')).some((l) =>
        /^Cron job slow: skipped the firing at 2030-01-01T03:02Z: run\.\d+ is still running \(concurrency forbid\)$/.test(l.line),
      ),
    );
    const lines = await waitFor('the second tick to end', async () => {
      const all = await hangarLines(cluster, 'shop');
      return all.filter((l) => /^Cron job tick failed: run\.\d+ exited with code 4$/.test(l.line)).length >= 2 ? all : null;
    });
    assert.ok(
      lines.some((l) => l.stream === 'stderr' && l.line.startsWith('Cron job tick failed')),
      'a failing job is an error line',
    );

    // The coordinator "was down" from 03:02 to 04:05: the hourly 04:00 firing is 5 min late and runs now.
    clock.at = Date.parse('2030-01-01T04:05:00Z');
    await waitFor('the late hourly firing', async () => (await cron(cluster, 'shop')).get('hourly')?.lastRun?.status === 'exited');
    const caughtUp = await hangarLines(cluster, 'shop');
    assert.ok(
      caughtUp.some((l) => l.line === 'Cron job hourly: missed its firing at 2030-01-01T04:00Z (the coordinator was down); running it now'),
    );
    assert.ok(caughtUp.some((l) => /^Cron job tick: 62 firing\(s\) from 2030-01-01T03:03Z were missed/.test(l.line)));

    // Down again until 06:30: the 06:00 firing is 30 min late (more than 15), skipped and said so.
    clock.at = Date.parse('2030-01-01T06:30:00Z');
    await waitFor('the skipped hourly firing', async () =>
      (await hangarLines(cluster, 'shop')).some(
        (l) =>
          l.line ===
          'Cron job hourly: missed its firing at 2030-01-01T06:00Z (the coordinator was down); more than 15 min late, so it was skipped',
      ),
    );
    assert.equal((await cron(cluster, 'shop')).get('hourly')?.nextRunAt, '2030-01-01T07:00:00.000Z');

    // cron:run fires one now, whoever asks.
    const now = await cluster.cli(['cron:run', 'hourly', '-a', 'shop']);
    assert.equal(now.code, 0, now.stderr);
    const name = /up, (run\.\d+)/.exec(now.stderr)?.[1];
    assert.ok(name, now.stderr);
    const manual = await waitFor('the manual run to end', async () => {
      const run = (await cron(cluster, 'shop')).get('hourly')?.lastRun;
      return run?.name === name && run.status === 'exited' ? run : null;
    });
    assert.equal(manual.exitCode, 0);
    assert.equal(manual.createdBy, 'admin');
    const unknown = await cluster.cli(['cron:run', 'nope', '-a', 'shop']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no cron job nope/);
    await waitFor('the human listing', async () =>
      /^tick +\* \* \* \* \* +2030-01-01T06:31Z +exit 4 in \d+s/m.test((await cluster.cli(['cron', '-a', 'shop'])).stdout),
    );
  },
);
