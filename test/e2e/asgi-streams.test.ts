/**
 * Long-lived connections through the router to a real ASGI Django app under Debian's uvicorn: a
 * websocket echo stays open across a redeploy (until the app's drain bound) while new connections
 * reach the new release, and a server-sent-events stream arrives event by event, unbuffered.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { request } from 'undici';
import { WebSocket } from 'ws';
import type { RunningAgent } from '../../agent/agent.js';
import { startCluster, waitFor } from '../helpers/cluster.js';
import { deployFixture } from '../helpers/deploy-fixture.js';

const APP = 'chat';

/** Django's ASGI handler for HTTP, and two raw ASGI endpoints Django 3.2 has no view for. */
const ASGI = `
import asyncio
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')
django_app = get_asgi_application()
RELEASE = os.environ.get('HANGAR_RELEASE', '?')


async def application(scope, receive, send):
    if scope['type'] == 'websocket' and scope['path'] == '/ws/echo/':
        await receive()
        await send({'type': 'websocket.accept'})
        while True:
            event = await receive()
            if event['type'] == 'websocket.disconnect':
                return
            await send({'type': 'websocket.send', 'text': RELEASE + ':' + (event.get('text') or '')})
    elif scope['type'] == 'http' and scope['path'] == '/events/':
        await send({'type': 'http.response.start', 'status': 200,
                    'headers': [(b'content-type', b'text/event-stream'), (b'cache-control', b'no-cache')]})
        for i in range(3):
            await send({'type': 'http.response.body', 'body': ('data: %d\\n\\n' % i).encode(), 'more_body': True})
            await asyncio.sleep(1)
        await send({'type': 'http.response.body', 'body': b'', 'more_body': False})
    else:
        await django_app(scope, receive, send)
`;

/** A websocket to the app through `agent`'s router, open. */
async function connect(agent: RunningAgent): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${agent.routerPort}/ws/echo/`, { headers: { host: `${APP}.localhost` } });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return ws;
}

/** Sends `text` and resolves with the next message (or rejects when the socket closes first). */
function echo(ws: WebSocket, text: string, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no echo of ${text} within ${timeoutMs} ms`)), timeoutMs);
    const done = (fn: () => void) => {
      clearTimeout(timer);
      ws.off('message', onMessage);
      ws.off('close', onClose);
      fn();
    };
    const onMessage = (data: Buffer) => done(() => resolve(data.toString('utf8')));
    const onClose = () => done(() => reject(new Error('closed')));
    ws.on('message', onMessage);
    ws.on('close', onClose);
    ws.send(text);
  });
}

test(
  'ASGI under uvicorn: a websocket outlives a redeploy until its drain bound, new ones reach the new release; SSE unbuffered',
  { timeout: 600_000 },
  async (t) => {
    const cluster = await startCluster(t);
    const agent = cluster.agents[0] as RunningAgent;
    await deployFixture(cluster, APP, {
      procfile: 'web: python -m uvicorn mysite.asgi:application --host 0.0.0.0 --port $PORT --lifespan off\n',
      appJson: { hangar: { drain_seconds: 8 } },
      files: { 'mysite/asgi.py': ASGI },
    });

    // Server-sent events: each event arrives when it is sent (a second apart), not at the end.
    const started = performance.now();
    const res = await request(`http://127.0.0.1:${agent.routerPort}/events/`, { headers: { host: `${APP}.localhost` } });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-type'], 'text/event-stream');
    const arrivals: { event: string; ms: number }[] = [];
    let buffered = '';
    for await (const chunk of res.body) {
      buffered += (chunk as Buffer).toString('utf8');
      let end: number;
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        arrivals.push({ event: buffered.slice(0, end), ms: performance.now() - started });
        buffered = buffered.slice(end + 2);
      }
    }
    assert.deepEqual(
      arrivals.map((a) => a.event),
      ['data: 0', 'data: 1', 'data: 2'],
    );
    const spread = (arrivals[2]?.ms ?? 0) - (arrivals[0]?.ms ?? 0);
    // The app sleeps 1 s between events: a router that buffered the stream would deliver them together.
    assert.ok(spread >= 1500, `events arrived ${Math.round(spread)} ms apart from first to last: buffered`);

    // A websocket on v1, then a redeploy (a config change makes v2).
    const old = await connect(agent);
    const first = await echo(old, 'hello');
    assert.match(first, /^v\d+:hello$/);
    const oldRelease = first.split(':')[0] as string;
    let oldClosedAt: number | null = null;
    old.on('close', () => (oldClosedAt = performance.now()));
    const deploy = cluster.cli(['config:set', 'GREETING=hi', '-a', APP], { timeoutMs: 300_000 });

    // New connections reach the new release while the old socket still answers from the old one.
    const fresh = await waitFor(
      'a new websocket on the new release',
      async () => {
        const ws = await connect(agent).catch(() => null);
        if (!ws) return null;
        const reply = await echo(ws, 'new').catch(() => '');
        if (reply.startsWith(`${oldRelease}:`) || reply === '') {
          ws.close();
          return null;
        }
        return { ws, reply };
      },
      240_000,
      300,
    );
    const newRelease = fresh.reply.split(':')[0] as string;
    assert.notEqual(newRelease, oldRelease);
    const newUpAt = performance.now();
    assert.equal(await echo(old, 'still here'), `${oldRelease}:still here`, 'the old websocket was cut when the new release came up');

    // The drain bound (8 s) then closes it; the deploy succeeds.
    await waitFor('the old websocket to be closed by the drain bound', () => oldClosedAt !== null, 120_000);
    const result = await deploy;
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    assert.equal(await echo(fresh.ws, 'again'), `${newRelease}:again`);
    fresh.ws.close();
    t.diagnostic(`old websocket closed ${(((oldClosedAt ?? newUpAt) - newUpAt) / 1000).toFixed(1)} s after the new release answered`);
  },
);
