/**
 * A gzipped tar of a dropped folder, made in the browser (ustar, regular files only; gzip with
 * the platform's CompressionStream), leaving out what `hangar deploy` leaves out by default.
 */

/** One file of the folder, with its path relative to the folder. */
export interface SourceFile {
  path: string;
  file: Blob;
}

/** Left out wherever they are in the tree, as the CLI's defaults. */
const IGNORED = new Set(['.git', '__pycache__', 'node_modules', '.venv', 'venv']);

/** Whether the CLI would leave this path out by default. */
export function ignoredPath(path: string): boolean {
  return path.split('/').some((part) => IGNORED.has(part)) || path.endsWith('.pyc');
}

const enc = new TextEncoder();

function writeString(h: Uint8Array, offset: number, length: number, value: string): void {
  h.set(enc.encode(value).subarray(0, length), offset);
}

function writeOctal(h: Uint8Array, offset: number, length: number, value: number): void {
  writeString(h, offset, length, `${value.toString(8).padStart(length - 1, '0')}\0`);
}

/** The 512-byte ustar header of one regular file. */
function header(path: string, size: number, mtime: number): Uint8Array<ArrayBuffer> {
  let name = path;
  let prefix = '';
  if (enc.encode(path).length > 100) {
    const cut = path.lastIndexOf('/', 155);
    if (cut <= 0 || enc.encode(path.slice(cut + 1)).length > 100) throw new Error(`The path ${path} is too long for a tar archive.`);
    prefix = path.slice(0, cut);
    name = path.slice(cut + 1);
  }
  const h = new Uint8Array(512);
  writeString(h, 0, 100, name);
  writeOctal(h, 100, 8, 0o644);
  writeOctal(h, 108, 8, 0);
  writeOctal(h, 116, 8, 0);
  writeOctal(h, 124, 12, size);
  writeOctal(h, 136, 12, Math.floor(mtime / 1000));
  h.fill(0x20, 148, 156);
  h[156] = 0x30;
  writeString(h, 257, 6, 'ustar\0');
  writeString(h, 263, 2, '00');
  writeString(h, 345, 155, prefix);
  let sum = 0;
  for (const b of h) sum += b;
  writeString(h, 148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return h;
}

/** The `.tar.gz` of `files` (ignored paths left out), as `hangar deploy` would upload. */
export async function tarGzip(files: SourceFile[]): Promise<Blob> {
  const parts: BlobPart[] = [];
  const kept = files.filter((f) => !ignoredPath(f.path)).sort((a, b) => a.path.localeCompare(b.path));
  if (kept.length === 0) throw new Error('The folder has no files to deploy.');
  for (const f of kept) {
    parts.push(header(f.path, f.file.size, f instanceof File ? f.lastModified : Date.now()), f.file);
    const pad = (512 - (f.file.size % 512)) % 512;
    if (pad) parts.push(new Uint8Array(pad));
  }
  parts.push(new Uint8Array(1024));
  const stream = new Blob(parts).stream().pipeThrough(new CompressionStream('gzip'));
  return new Response(stream).blob();
}

/** The common top folder of the paths (`mysite/manage.py` → `mysite/`), stripped. */
export function stripTopFolder(files: SourceFile[]): SourceFile[] {
  const tops = new Set(files.map((f) => f.path.split('/')[0]));
  if (tops.size !== 1 || files.some((f) => !f.path.includes('/'))) return files;
  return files.map((f) => ({ path: f.path.slice(f.path.indexOf('/') + 1), file: f.file }));
}

/** Every file under a dropped directory entry, with paths relative to it. */
export async function readDirectoryEntry(dir: FileSystemDirectoryEntry): Promise<SourceFile[]> {
  const out: SourceFile[] = [];
  const walk = async (entry: FileSystemDirectoryEntry, base: string): Promise<void> => {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise<FileSystemEntry[]>((resolve, reject) => reader.readEntries(resolve, reject));
      if (batch.length === 0) return;
      for (const child of batch) {
        const path = base ? `${base}/${child.name}` : child.name;
        if (ignoredPath(path)) continue;
        if (child.isDirectory) await walk(child as FileSystemDirectoryEntry, path);
        else if (child.isFile) {
          const file = await new Promise<File>((resolve, reject) => (child as FileSystemFileEntry).file(resolve, reject));
          out.push({ path, file });
        }
      }
    }
  };
  await walk(dir, '');
  return out;
}
