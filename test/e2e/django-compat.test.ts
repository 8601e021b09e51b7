import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { appendFile, cp, mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { FIXTURES, startCluster, waitFor, type Cluster } from '../helpers/cluster.js';
import { waitForPs } from '../helpers/deploy-fixture.js';
import { TestCa } from '../helpers/test-certs.js';

const run = promisify(execFile);

/** A view added to a fresh `startproject`: a form with `{% csrf_token %}`, and what the request looked like. */
const FORM_VIEW = String.raw`from django.http import HttpResponse
from django.template import engines


def form(request):
    if request.method == 'POST':
        return HttpResponse('posted %s secure=%s' % (request.POST.get('note', ''), request.is_secure()))
    page = engines['django'].from_string('<form method="post">{% csrf_token %}<input name="note"></form> secure={{ secure }}')
    return HttpResponse(page.render({'secure': request.is_secure()}, request))
`;

/**
 * An unmodified `django-admin startproject shop` (Debian's Django) plus a form view on `/`: its
 * settings.py has `ALLOWED_HOSTS = []` and no CSRF_TRUSTED_ORIGINS or SECURE_PROXY_SSL_HEADER.
 */
export async function startproject(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  await run('/usr/bin/django-admin', ['startproject', 'shop', dir]);
  await writeFile(join(dir, 'shop', 'form_views.py'), FORM_VIEW);
  await appendFile(join(dir, 'shop', 'urls.py'), '\nfrom shop.form_views import form\nurlpatterns.append(path("", form))\n');
  return dir;
}

interface Reply {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

/**
 * One HTTP/1.1 request to the router, from `localAddress` (a loopback address: trusted or not);
 * with `tls`, over HTTPS to its HTTPS port, the name sent by SNI and checked against `ca`.
 */
function send(
  port: number,
  o: {
    method?: string;
    path?: string;
    localAddress: string;
    headers: Record<string, string>;
    body?: string;
    tls?: { servername: string; ca: string };
  },
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const request = o.tls ? httpsRequest : httpRequest;
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: o.method ?? 'GET',
        path: o.path ?? '/',
        localAddress: o.localAddress,
        headers: o.headers,
        timeout: 10_000,
        ...(o.tls ? { servername: o.tls.servername, ca: o.tls.ca, agent: false } : {}),
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer in 10 s')));
    req.on('error', reject);
    req.end(o.body);
  });
}

const TRUSTED = '127.0.0.2';
const UNTRUSTED = '127.0.0.1';
const HOST = 'shop.hangar.test';

async function deployStartproject(
  t: Parameters<typeof startCluster>[0],
): Promise<{ cluster: Cluster; port: number; httpsPort: number; deploy: string }> {
  // Not under .localhost: with DEBUG on and ALLOWED_HOSTS empty, Django itself allows *.localhost.
  const cluster = await startCluster(t, { agents: 0, coordinator: { domain: 'hangar.test' } });
  const agent = await cluster.startAgent('agent-1', { trustedProxies: [`${TRUSTED}/32`] });
  assert.equal((await cluster.cli(['apps:create', 'shop'])).code, 0);
  // gunicorn itself believes X-Forwarded-Proto from 127.0.0.1 (its FORWARDED_ALLOW_IPS default),
  // which is where the router is only when both are on one server: as from a router on another
  // server, only SECURE_PROXY_SSL_HEADER can make Django see https here.
  const set = await cluster.cli(['config:set', 'FORWARDED_ALLOW_IPS=192.0.2.1', '-a', 'shop']);
  assert.equal(set.code, 0, set.stderr);
  const source = await startproject(join(cluster.dir, 'shop-source'));
  const deploy = await cluster.cli(['deploy', source, '-a', 'shop'], { timeoutMs: 300_000 });
  assert.equal(deploy.code, 0, `deploy failed:\n${deploy.stdout}\n${deploy.stderr}`);
  await waitForPs(cluster, 'shop', 'web.1 up', (r) => r.some((x) => x.id === 'web.1' && x.state === 'up'));
  return { cluster, port: agent.routerPort, httpsPort: agent.httpsPort, deploy: deploy.stdout + deploy.stderr };
}

test('an unmodified startproject serves its domain, takes a CSRF-protected POST over https from a trusted proxy, and a spoofed proto is replaced', async (t) => {
  const { cluster, port, httpsPort, deploy } = await deployStartproject(t);
  assert.match(deploy, /-----> Django: added shop\.hangar\.test to ALLOWED_HOSTS/);
  assert.match(deploy, /-----> Django: added shop\.hangar\.test to CSRF_TRUSTED_ORIGINS/);
  assert.match(deploy, /-----> Django: set SECURE_PROXY_SSL_HEADER/);

  const https = { host: HOST, 'x-forwarded-proto': 'https' };
  const page = await waitFor('the form through the router', async () => {
    const r = await send(port, { localAddress: TRUSTED, headers: https });
    return r.status === 200 ? r : null;
  });
  assert.match(page.body, /secure=True/, 'a trusted proxy said https: Django must see a secure request');
  const token = /name="csrfmiddlewaretoken" value="([^"]+)"/.exec(page.body)?.[1];
  assert.ok(token, page.body);
  const cookies = [page.headers['set-cookie'] ?? []].flat();
  const csrfCookie = cookies.map((c) => c.split(';')[0] ?? '').find((c) => c.startsWith('csrftoken='));
  assert.ok(csrfCookie, JSON.stringify(cookies));

  const posted = await send(port, {
    method: 'POST',
    localAddress: TRUSTED,
    headers: {
      ...https,
      cookie: csrfCookie,
      origin: `https://${HOST}`,
      referer: `https://${HOST}/`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ csrfmiddlewaretoken: token, note: 'hello' }).toString(),
  });
  assert.equal(posted.status, 200, posted.body.slice(0, 2000));
  assert.equal(posted.body, 'posted hello secure=True');

  // From a client that is not a trusted proxy, the router replaces X-Forwarded-Proto with http.
  const spoofed = await send(port, { localAddress: UNTRUSTED, headers: https });
  assert.equal(spoofed.status, 200, spoofed.body.slice(0, 2000));
  assert.match(spoofed.body, /secure=False/);

  // A custom domain with a certificate, added to the running app: the router terminates TLS, and
  // a release of the same build gives the processes the domain in HANGAR_DOMAINS, so the
  // unmodified settings accept it as a host and as a CSRF origin — no deploy needed.
  const CUSTOM = 'www.shop.example';
  const ca = await TestCa.create(await mkdtemp(join(cluster.dir, 'ca-')));
  const leaf = await ca.issue([CUSTOM]);
  const added = await cluster.cli(['domains:add', CUSTOM, '-a', 'shop']);
  assert.equal(added.code, 0, added.stderr);
  assert.match(added.stdout, /Releasing v2 \(same build and config\) so shop's processes see it/);
  const cert = await cluster.cli(['certs:add', leaf.certPath, leaf.keyPath, '-a', 'shop']);
  assert.equal(cert.code, 0, cert.stderr);
  const tls = { servername: CUSTOM, ca: await ca.caPem() };
  const secure = await waitFor(
    `the form over https at ${CUSTOM}`,
    async () => {
      const r = await send(httpsPort, { localAddress: UNTRUSTED, headers: { host: CUSTOM }, tls });
      return r.status === 200 ? r : null;
    },
    90_000,
  );
  assert.match(secure.body, /secure=True/, 'the router terminated TLS: Django must see a secure request');
  const secureToken = /name="csrfmiddlewaretoken" value="([^"]+)"/.exec(secure.body)?.[1];
  const secureCookie = [secure.headers['set-cookie'] ?? []]
    .flat()
    .map((c) => c.split(';')[0] ?? '')
    .find((c) => c.startsWith('csrftoken='));
  assert.ok(secureToken && secureCookie, secure.body);
  const postedTls = await send(httpsPort, {
    method: 'POST',
    localAddress: UNTRUSTED,
    tls,
    headers: {
      host: CUSTOM,
      cookie: secureCookie,
      origin: `https://${CUSTOM}`,
      referer: `https://${CUSTOM}/`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ csrfmiddlewaretoken: secureToken, note: 'over-tls' }).toString(),
  });
  assert.equal(postedTls.status, 200, postedTls.body.slice(0, 2000));
  assert.equal(postedTls.body, 'posted over-tls secure=True');
  const releases = JSON.parse((await cluster.cli(['releases', '-a', 'shop', '--json'])).stdout) as { name: string; description: string }[];
  assert.deepEqual(
    releases.map((r) => r.name),
    ['v2', 'v1'],
  );
  assert.equal(releases[0]?.description, 'Add domain www.shop.example');

  // One setting switched off: the next release leaves SECURE_PROXY_SSL_HEADER alone.
  const off = await cluster.cli(['config:set', 'HANGAR_DJANGO_SECURE_PROXY_SSL_HEADER=0', '-a', 'shop'], { timeoutMs: 300_000 });
  assert.equal(off.code, 0, off.stderr);
  await waitFor('v2 serving without SECURE_PROXY_SSL_HEADER', async () => {
    const r = await send(port, { localAddress: TRUSTED, headers: https });
    return r.status === 200 && /secure=False/.test(r.body);
  });
  const logs = await cluster.cli(['logs', '-a', 'shop', '--source', 'build', '-n', '500']);
  assert.match(logs.stdout, /Django: SECURE_PROXY_SSL_HEADER left as it is \(HANGAR_DJANGO_SECURE_PROXY_SSL_HEADER=0\)/);
});

test('.python-version naming a Python this server has builds with it; runtime.txt naming one it lacks fails the deploy saying what it has', async (t) => {
  const cluster = await startCluster(t);
  const host = (await run('/usr/bin/python3', ['-c', 'import sys; print("%d.%d.%d" % sys.version_info[:3])'])).stdout.trim();
  const minor = host.split('.').slice(0, 2).join('.');
  assert.equal((await cluster.cli(['apps:create', 'pinned'])).code, 0);
  const set = await cluster.cli(['config:set', `DATABASE_URL=sqlite:///${join(cluster.appDir, 'pinned.sqlite3')}`, '-a', 'pinned']);
  assert.equal(set.code, 0, set.stderr);
  const source = join(cluster.dir, 'pinned-source');
  await cp(join(FIXTURES, 'django-app'), source, { recursive: true });

  await writeFile(join(source, '.python-version'), `${minor}\n`);
  const ok = await cluster.cli(['deploy', source, '-a', 'pinned'], { timeoutMs: 300_000 });
  assert.equal(ok.code, 0, `deploy failed:\n${ok.stdout}\n${ok.stderr}`);
  assert.match(
    ok.stdout,
    new RegExp(
      `-----> Python ${host.replace(/\./g, '\\.')} \\(/usr/bin/python3\\), as \\.python-version asks \\(${minor.replace('.', '\\.')}\\)`,
    ),
  );

  await writeFile(join(source, 'runtime.txt'), 'python-3.4.10\n');
  const missing = await cluster.cli(['deploy', source, '-a', 'pinned'], { timeoutMs: 300_000 });
  assert.notEqual(missing.code, 0, missing.stdout);
  assert.match(
    missing.stderr,
    new RegExp(
      `runtime\\.txt asks for Python 3\\.4\\.10, which this server does not have \\(it has [^)]*${minor.replace('.', '\\.')}[^)]*\\)`,
    ),
  );
  // The release that was up stays up.
  const served = await cluster.get(cluster.agents[0]!, 'pinned', '/');
  assert.equal(served.status, 200);
});

/** Run by the postdeploy scripts: the release they follow answers through the router. */
const LIVE_CHECK = String.raw`import os, sys, urllib.request
req = urllib.request.Request('http://127.0.0.1:%s/' % os.environ['ROUTER_PORT'], headers={'Host': os.environ['HANGAR_APP'] + '.localhost'})
with urllib.request.urlopen(req, timeout=10) as res:
    print('%s: %s answers %d as uid %d' % (sys.argv[1], os.environ['HANGAR_RELEASE'], res.status, os.getuid()))
`;

test('app.json predeploy runs before anything starts, postdeploy after the release is live; failures say what happened and what keeps serving', async (t) => {
  const cluster = await startCluster(t);
  const agent = cluster.agents[0]!;
  const app = 'scripts';
  assert.equal((await cluster.cli(['apps:create', app])).code, 0);
  const set = await cluster.cli([
    'config:set',
    `DATABASE_URL=sqlite:///${join(cluster.appDir, `${app}.sqlite3`)}`,
    `ROUTER_PORT=${agent.routerPort}`,
    '-a',
    app,
  ]);
  assert.equal(set.code, 0, set.stderr);
  const source = join(cluster.dir, `${app}-source`);
  await cp(join(FIXTURES, 'django-app'), source, { recursive: true });
  await writeFile(join(source, 'live_check.py'), LIVE_CHECK);
  const appJson = (scripts: unknown) => writeFile(join(source, 'app.json'), JSON.stringify({ scripts }));
  const deploy = (what: string) => cluster.cli(['deploy', source, '-a', app], { timeoutMs: 300_000 }).then((r) => ({ ...r, what }));

  await appJson({
    postdeploy: 'python live_check.py first',
    dokku: {
      predeploy: 'echo "predeploy of $HANGAR_RELEASE in $(basename $PWD)" && test ! -e /proc/self/nothing',
      postdeploy: 'python live_check.py every',
    },
  });
  const v1 = await deploy('v1');
  assert.equal(v1.code, 0, `${v1.stdout}\n${v1.stderr}`);
  // Run as the app's own user (when the agent is root), never as root.
  const uid = process.getuid?.() === 0 ? (await run('id', ['-u', `hangar-${app}`])).stdout.trim() : String(process.getuid?.());
  const user = `uid ${uid}`;
  const out = v1.stdout;
  const at = (text: string) => {
    const i = out.indexOf(text);
    assert.ok(i >= 0, `missing ${JSON.stringify(text)} in:\n${out}`);
    return i;
  };
  // predeploy: after the build, before the release command and before any process starts.
  assert.ok(at('-----> Running predeploy (app.json scripts.dokku.predeploy)') > at('-----> Checking that the Python source compiles'));
  assert.ok(at('predeploy of v1 in ') < at('-----> Running release command'));
  assert.ok(at('-----> Running release command') < at('-----> Starting v1'));
  // postdeploy: once healthy; the first deploy runs scripts.postdeploy, then scripts.dokku.postdeploy, both as the app's user.
  assert.ok(at('-----> v1 is up') < at('-----> Running postdeploy (app.json scripts.postdeploy): python live_check.py first'));
  assert.ok(at(`first: v1 answers 200 as ${user}`) < at('-----> Running postdeploy (app.json scripts.dokku.postdeploy)'));
  assert.ok(at(`every: v1 answers 200 as ${user}`) < at('-----> v1 deployed'));
  const logs = await cluster.cli(['logs', '-a', app, '--source', 'release', '-n', '500']);
  assert.match(logs.stdout, /predeploy of v1 in /);
  assert.match(logs.stdout, new RegExp(`every: v1 answers 200 as ${user}`));

  // Later deploys: scripts.postdeploy does not run again, scripts.dokku.postdeploy does.
  const v2 = await deploy('v2');
  assert.equal(v2.code, 0, `${v2.stdout}\n${v2.stderr}`);
  assert.doesNotMatch(v2.stdout, /scripts\.postdeploy\)|first: /);
  assert.match(v2.stdout, new RegExp(`every: v2 answers 200 as ${user}`));

  // A failing predeploy fails the deploy before anything is switched: v2 keeps serving.
  await appJson({ dokku: { predeploy: 'echo cannot prepare; exit 3', postdeploy: 'python live_check.py every' } });
  const v3 = await deploy('v3');
  assert.notEqual(v3.code, 0, v3.stdout);
  assert.match(v3.stdout, /cannot prepare/);
  assert.match(
    v3.stderr,
    /The predeploy script \(app\.json scripts\.dokku\.predeploy\) failed \(exit code 3\); nothing was started or switched/,
  );
  assert.doesNotMatch(v3.stdout, /Starting v3/);
  const afterPredeploy = await waitForPs(cluster, app, 'v2 still serving', (rows) =>
    rows.some((r) => r.type === 'web' && r.release === 'v2' && r.state === 'up'),
  );
  assert.ok(
    afterPredeploy.every((r) => r.release === 'v2'),
    JSON.stringify(afterPredeploy),
  );
  assert.equal((await cluster.get(agent, app, '/')).status, 200);

  // A failing postdeploy is reported (non-zero exit, a sentence) and the healthy release stays live.
  await appJson({ dokku: { postdeploy: 'echo notifying; exit 4' } });
  const v4 = await deploy('v4');
  assert.notEqual(v4.code, 0, v4.stdout);
  assert.match(v4.stdout, /notifying/);
  assert.match(
    v4.stderr,
    /v4 is live, but the postdeploy script \(app\.json scripts\.dokku\.postdeploy\) failed \(exit code 4\)\. It was not rolled back/,
  );
  await waitForPs(cluster, app, 'v4 serving', (rows) => rows.some((r) => r.type === 'web' && r.release === 'v4' && r.state === 'up'));
  assert.equal((await cluster.get(agent, app, '/')).status, 200);
});
