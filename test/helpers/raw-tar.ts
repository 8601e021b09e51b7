import { gzipSync } from 'node:zlib';

/** One entry of a hand-made tar: anything a hostile upload could hold. */
export interface RawTarEntry {
  name: string;
  /** '0' file, '2' symlink, '1' hard link, '5' directory, '3' character device. */
  type: '0' | '1' | '2' | '3' | '5';
  content?: string;
  linkname?: string;
}

function field(buf: Buffer, offset: number, length: number, value: string): void {
  buf.write(value.slice(0, length), offset, length, 'utf8');
}

function octal(value: number, length: number): string {
  return `${value.toString(8).padStart(length - 1, '0')}\0`;
}

/**
 * A gzipped ustar archive written byte by byte, so tests can make the entries a well-behaved tar
 * library refuses to write (absolute paths, `..`, links pointing outside, devices).
 */
export function rawTarGz(entries: readonly RawTarEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.content ?? '');
    const header = Buffer.alloc(512);
    field(header, 0, 100, e.name);
    field(header, 100, 8, octal(e.type === '5' ? 0o755 : 0o644, 8));
    field(header, 108, 8, octal(0, 8));
    field(header, 116, 8, octal(0, 8));
    field(header, 124, 12, octal(e.type === '0' ? body.length : 0, 12));
    field(header, 136, 12, octal(1_700_000_000, 12));
    field(header, 148, 8, '        ');
    field(header, 156, 1, e.type);
    field(header, 157, 100, e.linkname ?? '');
    field(header, 257, 6, 'ustar\0');
    field(header, 263, 2, '00');
    let sum = 0;
    for (const byte of header) sum += byte;
    field(header, 148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
    blocks.push(header);
    if (e.type === '0' && body.length > 0) {
      blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
    }
  }
  blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks));
}
