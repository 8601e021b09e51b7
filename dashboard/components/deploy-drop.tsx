/**
 * Deploy by drag and drop: a folder (packed in the page as `hangar deploy` packs it) or a
 * `.tar.gz`, uploaded to `POST /v1/apps/APP/builds`; the build, release phase and rollout follow.
 * A folder picker does the same from the keyboard.
 */
import { useState } from 'preact/hooks';
import type { DeployView } from '../../common/api-types.js';
import { api, ApiError, appPath } from '../api.js';
import { formatBytes } from '../format.js';
import { readDirectoryEntry, stripTopFolder, tarGzip, type SourceFile } from '../source-tar.js';
import { DeployProgress } from './deploy-progress.js';

export function DeployDrop({ app, onChanged }: { app: string; onChanged: () => void }) {
  const [over, setOver] = useState(false);
  const [note, setNote] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [deploy, setDeploy] = useState<DeployView | null>(null);
  const [busy, setBusy] = useState(false);

  const upload = async (archive: Blob) => {
    setNote(`Uploading ${formatBytes(archive.size)}…`);
    const { deploy: d } = await api<{ deploy: DeployView }>('POST', appPath(app, 'builds'), {
      body: archive,
      contentType: 'application/gzip',
    });
    setNote(`Uploaded ${formatBytes(archive.size)}.`);
    setDeploy(d);
    onChanged();
  };

  const run = async (make: () => Promise<Blob>) => {
    setBusy(true);
    setError(null);
    setDeploy(null);
    try {
      await upload(await make());
    } catch (err) {
      setNote(null);
      setError(err instanceof ApiError || err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };

  const onDrop = (e: DragEvent) => {
    e.preventDefault();
    setOver(false);
    const items = [...(e.dataTransfer?.items ?? [])];
    const dir = items.map((i) => i.webkitGetAsEntry?.()).find((entry) => entry?.isDirectory) as FileSystemDirectoryEntry | undefined;
    const file = e.dataTransfer?.files[0];
    if (dir) return void run(async () => tarGzip(await readDirectoryEntry(dir)));
    if (file && /\.(tar\.gz|tgz)$/i.test(file.name)) return void run(async () => file);
    setError('Drop the app’s folder or a .tar.gz of it (for a .zip, unpack it first or use `hangar deploy`).');
  };

  const onPick = (e: Event) => {
    const input = e.currentTarget as HTMLInputElement;
    const files: SourceFile[] = [...(input.files ?? [])].map((f) => ({ path: f.webkitRelativePath || f.name, file: f }));
    input.value = '';
    if (files.length) void run(async () => tarGzip(stripTopFolder(files)));
  };

  return (
    <section aria-labelledby="deploy-h" class="card wide">
      <h2 id="deploy-h">Deploy</h2>
      <div
        class={`drop ${over ? 'over' : ''}`}
        data-busy={busy}
        onDragOver={(e) => {
          e.preventDefault();
          setOver(true);
        }}
        onDragLeave={() => setOver(false)}
        onDrop={onDrop}
      >
        <p>
          Drop the app’s folder or a <code>.tar.gz</code> here, or{' '}
          <label class="button">
            choose a folder
            <input class="sr-only" type="file" {...{ webkitdirectory: true }} multiple disabled={busy} onChange={onPick} />
          </label>
          .
        </p>
      </div>
      {note && <p class="muted">{note}</p>}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {deploy && <DeployProgress app={app} first={deploy} onDone={onChanged} />}
    </section>
  );
}
