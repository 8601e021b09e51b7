/** Releases, newest first, with who made them and when; rollback (confirmed) for deploy tokens. */
import { useState } from 'preact/hooks';
import type { DeployView, ReleaseView } from '../../common/api-types.js';
import { api, ApiError, appPath } from '../api.js';
import { ConfirmDialog } from './confirm-dialog.js';
import { DeployProgress } from './deploy-progress.js';
import { TimeAgo } from './time-ago.js';

export interface ReleasesPanelProps {
  app: string;
  releases: ReleaseView[];
  canRollback: boolean;
  onChanged: () => void;
}

/** Releases one can go back to: ones that served (the API refuses nothing else by default). */
function rollbackable(r: ReleaseView): boolean {
  return !r.current && (r.status === 'succeeded' || r.status === 'superseded' || r.status === 'running');
}

export function ReleasesPanel({ app, releases, canRollback, onChanged }: ReleasesPanelProps) {
  const [asking, setAsking] = useState<ReleaseView | null>(null);
  const [deploy, setDeploy] = useState<DeployView | null>(null);
  const [error, setError] = useState<string | null>(null);
  const rollback = async (target: ReleaseView) => {
    setAsking(null);
    setError(null);
    try {
      const res = await api<{ release: ReleaseView; deploy: DeployView }>('POST', appPath(app, 'releases'), {
        json: { rollback: target.version },
      });
      setDeploy(res.deploy);
      onChanged();
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  };
  return (
    <section aria-labelledby="releases-h" class="card wide">
      <h2 id="releases-h">Releases</h2>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {deploy && <DeployProgress app={app} first={deploy} onDone={onChanged} />}
      {releases.length === 0 ? (
        <p class="muted">No releases yet.</p>
      ) : (
        <div class="scroll">
          <table class="releases">
            <thead>
              <tr>
                <th scope="col">Release</th>
                <th scope="col">What</th>
                <th scope="col">Status</th>
                <th scope="col">By</th>
                <th scope="col">When</th>
                {canRollback && (
                  <th scope="col">
                    <span class="sr-only">Actions</span>
                  </th>
                )}
              </tr>
            </thead>
            <tbody>
              {releases.map((r) => (
                <tr key={r.version} data-release={r.name} class={r.current ? 'current' : ''}>
                  <th scope="row">
                    {r.name}
                    {r.current && <span class="badge state-up">current</span>}
                  </th>
                  <td>{r.description}</td>
                  <td>{r.status.replace('_', ' ')}</td>
                  <td>{r.createdBy}</td>
                  <td>
                    <TimeAgo iso={r.createdAt} />
                  </td>
                  {canRollback && (
                    <td>
                      {rollbackable(r) && (
                        <button type="button" class="small" onClick={() => setAsking(r)}>
                          Roll back to {r.name}
                        </button>
                      )}
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {asking && (
        <ConfirmDialog
          title={`Roll back ${app} to ${asking.name}?`}
          confirmLabel={`Roll back to ${asking.name}`}
          onConfirm={() => void rollback(asking)}
          onCancel={() => setAsking(null)}
        >
          <p>
            This makes a new release with {asking.name}'s code and config ({asking.description}) and rolls it out, without running the
            release command.
          </p>
        </ConfirmDialog>
      )}
    </section>
  );
}
