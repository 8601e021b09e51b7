import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A certificate and key made by {@link TestCa}, as PEM text and as files. */
export interface TestCert {
  certPem: string;
  keyPem: string;
  certPath: string;
  keyPath: string;
}

function stamp(d: Date): string {
  return `${d.toISOString().replace(/[-:T]/g, '').slice(0, 14)}Z`;
}

/** A throwaway certificate authority made with the openssl command, in `dir`. */
export class TestCa {
  readonly dir: string;
  #n = 0;

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** Makes the CA (an EC P-256 key and a self-signed certificate) in `dir`. */
  static async create(dir: string): Promise<TestCa> {
    await writeFile(
      join(dir, 'ca.cnf'),
      `[ca]\ndefault_ca = d\n[d]\ndatabase = ${join(dir, 'index.txt')}\nnew_certs_dir = ${dir}\nserial = ${join(dir, 'serial')}\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\nunique_subject = no\n[p]\ncommonName = supplied\n`,
    );
    await writeFile(join(dir, 'index.txt'), '');
    await writeFile(join(dir, 'serial'), '01\n');
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      join(dir, 'ca.key'),
      '-out',
      join(dir, 'ca.pem'),
      '-days',
      '7300',
      '-subj',
      '/CN=Hangar Test CA',
    ]);
    return new TestCa(dir);
  }

  /** The CA certificate, PEM. */
  caPem(): Promise<string> {
    return TestCa.caPemOf(this.dir);
  }

  /** The certificate of the CA made in `dir`, PEM. */
  static caPemOf(dir: string): Promise<string> {
    return readFile(join(dir, 'ca.pem'), 'utf8');
  }

  /**
   * A leaf certificate for `names` (DNS names, wildcards allowed; IP addresses as `IP:…`), valid
   * from `from` to `until` (default: an hour ago to 20 days ahead).
   */
  async issue(names: string[], validity: { from?: Date; until?: Date } = {}): Promise<TestCert> {
    const base = join(this.dir, `leaf-${++this.#n}`);
    const san = names.map((n) => (n.startsWith('IP:') ? n : `DNS:${n}`)).join(',');
    await run('openssl', [
      'req',
      '-new',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      `${base}.key`,
      '-out',
      `${base}.csr`,
      '-subj',
      `/CN=${(names[0] ?? 'x').replace(/^IP:/, '')}`,
      '-addext',
      `subjectAltName=${san}`,
    ]);
    const from = validity.from ?? new Date(Date.now() - 3_600_000);
    const until = validity.until ?? new Date(Date.now() + 20 * 86_400_000);
    await run('openssl', [
      'ca',
      '-batch',
      '-config',
      join(this.dir, 'ca.cnf'),
      '-cert',
      join(this.dir, 'ca.pem'),
      '-keyfile',
      join(this.dir, 'ca.key'),
      '-in',
      `${base}.csr`,
      '-out',
      `${base}.pem`,
      '-startdate',
      stamp(from),
      '-enddate',
      stamp(until),
      '-notext',
    ]);
    return {
      certPem: await readFile(`${base}.pem`, 'utf8'),
      keyPem: await readFile(`${base}.key`, 'utf8'),
      certPath: `${base}.pem`,
      keyPath: `${base}.key`,
    };
  }
}
