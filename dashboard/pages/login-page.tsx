/** Log in with a pasted API token (traded at once for a session; the token itself is not kept). */
import { useState } from 'preact/hooks';
import type { DashboardSessionView } from '../../common/dashboard-types.js';
import { api, ApiError } from '../api.js';
import { saveSession } from '../session.js';

export function LoginPage({ notice }: { notice: string | null }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const { session } = await api<{ session: DashboardSessionView }>('POST', '/v1/dashboard/sessions', { token: token.trim() });
      setToken('');
      saveSession(session);
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="login" id="main">
      <h1>Hangar</h1>
      <p>
        Run <code>hangar dashboard</code> for a one-time login link, or paste an API token (<code>hangar tokens:create --scope read</code>).
      </p>
      {notice && (
        <p class="notice" role="status">
          {notice}
        </p>
      )}
      <form onSubmit={(e) => void submit(e)}>
        <label for="token">API token</label>
        <input
          id="token"
          type="password"
          autocomplete="off"
          spellcheck={false}
          required
          value={token}
          onInput={(e) => setToken(e.currentTarget.value)}
        />
        <button type="submit" disabled={busy || token.trim() === ''}>
          Log in
        </button>
      </form>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <p class="fine">The page keeps only a session that ends when you close the tab or after an hour unused.</p>
    </main>
  );
}
