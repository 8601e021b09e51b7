/**
 * `hangar domains`, `domains:add DOMAIN`, `domains:remove DOMAIN`, `certs`, `certs:add CERT KEY`
 * and `certs:auto:enable`: custom domains, their DNS records, and HTTPS certificates (uploaded, or
 * issued and renewed by ACME). `certs:auto:enable` follows the orders until every custom domain has
 * its certificate.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import type { DomainView, TlsSettingsView } from '../../common/api-types.js';
import { parseDomainName } from '../../common/domain-name.js';
import { HangarError } from '../../common/errors.js';
import { formatJson, formatTable, heading } from '../output.js';
import { atEdge, badInput, pause, resolveApp, withAppOption, type CliContext } from './context.js';
import { followDeploy, parseTimeoutSeconds, timeoutOption } from './deploy.js';
import type { DomainRelease } from '../api-client.js';

/** Default of `certs:auto:enable --timeout`, in seconds. */
export const DEFAULT_ACME_TIMEOUT_S = 180;

interface TlsFlags {
  hsts?: boolean;
  redirect?: boolean;
}

/** `--hsts/--no-hsts` and `--redirect/--no-redirect`: only what was given is changed. */
function withTlsOptions(command: Command): Command {
  return command
    .option('--hsts', 'send Strict-Transport-Security on HTTPS responses (max-age one year)')
    .option('--no-hsts', 'stop sending Strict-Transport-Security')
    .option('--redirect', 'answer plain HTTP with a 308 to HTTPS once a domain has a certificate (the default)')
    .option('--no-redirect', 'serve plain HTTP too, without redirecting');
}

function tlsPatch(flags: TlsFlags): Partial<TlsSettingsView> {
  return {
    ...(flags.hsts === undefined ? {} : { hsts: flags.hsts }),
    ...(flags.redirect === undefined ? {} : { redirect: flags.redirect }),
  };
}

function describeTls(tls: TlsSettingsView): string {
  return `HTTP→HTTPS redirect ${tls.redirect ? 'on' : 'off'}, HSTS ${tls.hsts ? 'on' : 'off'}`;
}

async function readPem(path: string, what: string, cwd: string | undefined): Promise<string> {
  try {
    return await readFile(resolve(cwd ?? '.', path), 'utf8');
  } catch (err) {
    throw badInput(`Cannot read the ${what} file ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'}); check the path`);
  }
}

function certificateCell(d: DomainView): string {
  const c = d.certificate;
  const until = c.expiresAt ? ` until ${c.expiresAt.slice(0, 10)}` : '';
  const source = c.source ? ` (${c.source})` : '';
  return `${c.state}${source}${until}`;
}

/** Registers the domain and certificate commands on `program`. */
export function registerDomainsCommands(program: Command, ctx: CliContext): void {
  withAppOption(program.command('domains'))
    .description("list the app's domains: DNS check, certificate state and expiry")
    .option('--json', 'print the API objects as a JSON array')
    .action(async (options: { json?: boolean }, command: Command) => {
      const app = resolveApp(command, ctx);
      const domains = await (await ctx.client()).listDomains(app);
      if (options.json) return ctx.out(formatJson(domains));
      ctx.out(heading(`${app} Domains`));
      ctx.out(
        formatTable(
          domains.map((d) => [d.hostname, d.kind, d.dns.check, certificateCell(d)]),
          ['DOMAIN', 'KIND', 'DNS', 'CERTIFICATE'],
        ),
      );
      for (const d of domains) {
        const c = d.certificate;
        if (c.lastError) {
          const next = c.nextAttemptAt ? ` Next attempt at ${c.nextAttemptAt}.` : '';
          ctx.out(`\n${d.hostname}: ACME failed: ${c.lastError}.${next}\n`);
        }
      }
    });

  withAppOption(program.command('domains:add'))
    .description('serve the app at a domain of yours too; prints the DNS records to create')
    .argument('<domain>', 'the host name, like www.example.com')
    .option('--wait', "follow the release that gives the app's processes the domain until it is live")
    .addOption(timeoutOption())
    .action(async (input: string, options: { wait?: boolean; timeout: number }, command: Command) => {
      const app = resolveApp(command, ctx);
      const hostname = atEdge(command, () => parseDomainName(input));
      const client = await ctx.client();
      const { domain, dns, ...made } = await client.addDomain(app, hostname);
      ctx.out(`Adding ${domain.hostname} to ${app}... done; every router serves it now.\n\n`);
      ctx.out('Point it at your routers with one of these DNS records:\n');
      ctx.out(
        formatTable(
          dns.map((r) => [r.type, r.name, r.value]),
          ['TYPE', 'NAME', 'VALUE'],
        ),
      );
      ctx.out(`\nThen get it a certificate: \`hangar certs:auto:enable -a ${app}\` (ACME), or \`hangar certs:add CERT KEY -a ${app}\`.\n`);
      await reportRelease(app, made, options);
    });

  withAppOption(program.command('domains:remove'))
    .description('stop serving the app at a custom domain')
    .argument('<domain>', 'the host name')
    .option('--wait', 'follow the release that takes the domain from the processes until it is live')
    .addOption(timeoutOption())
    .action(async (input: string, options: { wait?: boolean; timeout: number }, command: Command) => {
      const app = resolveApp(command, ctx);
      const hostname = atEdge(command, () => parseDomainName(input));
      const made = await (await ctx.client()).removeDomain(app, hostname);
      ctx.out(`Removing ${hostname} from ${app}... done\n`);
      await reportRelease(app, made, options);
    });

  /** What a domain change did to the app's processes (they read HANGAR_DOMAINS when they start). */
  const reportRelease = async (app: string, made: DomainRelease, options: { wait?: boolean; timeout: number }): Promise<void> => {
    if (made.release === null || made.deploy === null) {
      ctx.out(`Processes ${app} starts from now on see it (HANGAR_DOMAINS, Django's ALLOWED_HOSTS).\n`);
      return;
    }
    ctx.out(
      `Releasing ${made.release.name} (same build and config) so ${app}'s processes see it (HANGAR_DOMAINS, Django's ALLOWED_HOSTS)${options.wait ? '' : `: \`hangar releases -a ${app}\``}.\n`,
    );
    if (options.wait) await followDeploy(ctx, await ctx.client(), app, made.deploy, { timeoutMs: options.timeout * 1000 });
  };

  withAppOption(program.command('certs'))
    .description("list the app's certificates and its HTTPS settings")
    .option('--json', 'print {certs, tls} as JSON')
    .action(async (options: { json?: boolean }, command: Command) => {
      const app = resolveApp(command, ctx);
      const { certs, tls } = await (await ctx.client()).listCerts(app);
      if (options.json) return ctx.out(formatJson({ certs, tls }));
      ctx.out(heading(`${app} Certificates`));
      if (certs.length === 0) {
        ctx.out(`None yet: \`hangar certs:auto:enable -a ${app}\` (ACME) or \`hangar certs:add CERT KEY -a ${app}\`.\n`);
      } else {
        ctx.out(
          formatTable(
            certs.map((c) => [c.id.slice(0, 8), c.source, c.names.join(','), c.domains.join(',') || '-', c.notAfter.slice(0, 10), c.state]),
            ['ID', 'SOURCE', 'NAMES', 'SERVES', 'EXPIRES', 'STATE'],
          ),
        );
      }
      ctx.out(`\nACME ${tls.acme ? 'on' : 'off'}; ${describeTls(tls)}\n`);
    });

  withTlsOptions(withAppOption(program.command('certs:add')))
    .description('upload a certificate (chain) and its private key, PEM (wildcards and internal CAs welcome)')
    .argument('<cert>', 'the certificate file (leaf first, then the chain)')
    .argument('<key>', 'its private key file (unencrypted)')
    .action(async (certPath: string, keyPath: string, flags: TlsFlags, command: Command) => {
      const app = resolveApp(command, ctx);
      const [cert, key] = await atEdgeAsync(command, () =>
        Promise.all([readPem(certPath, 'certificate', ctx.io.cwd), readPem(keyPath, 'key', ctx.io.cwd)]),
      );
      const client = await ctx.client();
      const view = await client.addCert(app, cert, key);
      ctx.out(
        `Adding the certificate for ${view.names.join(', ')} to ${app}... done; it serves ${view.domains.join(', ')} until ${view.notAfter}.\n`,
      );
      const patch = tlsPatch(flags);
      if (Object.keys(patch).length > 0) ctx.out(`${describeTls(await client.setTls(app, patch))}\n`);
    });

  withTlsOptions(withAppOption(program.command('certs:auto:enable')))
    .description("get and renew the custom domains' certificates from ACME (Let's Encrypt), on every router")
    .addOption(
      new Option('--timeout <seconds>', 'stop waiting after this many seconds (ACME goes on)')
        .default(DEFAULT_ACME_TIMEOUT_S)
        .argParser(parseTimeoutSeconds),
    )
    .option('--no-wait', 'return at once instead of following the orders')
    .action(async (flags: TlsFlags & { timeout: number; wait: boolean }, command: Command) => {
      const app = resolveApp(command, ctx);
      const client = await ctx.client();
      const tls = await client.setTls(app, { acme: true, ...tlsPatch(flags) });
      ctx.out(`Enabling ACME certificates for ${app}... done (${describeTls(tls)})\n`);
      if (!flags.wait) return;
      await followCertificates(ctx, app, ctx.clock.now() + flags.timeout * 1000);
    });
}

/** Like {@link atEdge}, for a parser that reads files. */
async function atEdgeAsync<T>(command: Command, parse: () => Promise<T>): Promise<T> {
  try {
    return await parse();
  } catch (err) {
    return atEdge(command, () => {
      throw err;
    });
  }
}

/** Prints each custom domain's certificate state as it changes, until all are valid (or one failed). */
async function followCertificates(ctx: CliContext, app: string, deadline: number): Promise<void> {
  const client = await ctx.client();
  const seen = new Map<string, string>();
  for (;;) {
    const custom = (await client.listDomains(app)).filter((d) => d.kind === 'custom');
    if (custom.length === 0) {
      ctx.out(`${app} has no custom domain yet; add one with \`hangar domains:add DOMAIN -a ${app}\` and it gets a certificate.\n`);
      return;
    }
    for (const d of custom) {
      const state = d.certificate.state;
      if (seen.get(d.hostname) === state) continue;
      seen.set(d.hostname, state);
      const until = d.certificate.expiresAt ? `, valid until ${d.certificate.expiresAt}` : '';
      ctx.out(`-----> ${d.hostname}: ${state}${until}\n`);
    }
    const failed = custom.find((d) => d.certificate.state === 'failed');
    if (failed) {
      throw new HangarError(
        'CERT_INVALID',
        `ACME could not get a certificate for ${failed.hostname}: ${failed.certificate.lastError ?? 'unknown error'}. It tries again at ${failed.certificate.nextAttemptAt ?? 'the next turn'}; check that the domain's DNS points at your routers (\`hangar domains -a ${app}\`)`,
      );
    }
    if (custom.every((d) => d.certificate.state === 'valid' || d.certificate.state === 'expiring')) {
      ctx.out(`-----> Every custom domain of ${app} is served over HTTPS\n`);
      return;
    }
    if (ctx.clock.now() >= deadline) {
      throw new HangarError(
        'UNREACHABLE',
        `Gave up waiting for the certificates (ACME goes on); follow them with \`hangar domains -a ${app}\``,
      );
    }
    await pause(ctx, 500);
  }
}
