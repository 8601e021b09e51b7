/** The dashboard's entry: logs in (login link, pasted token or the tab's session), then routes. */
import 'uplot/dist/uPlot.min.css';
import './styles.css';
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import type { DashboardSessionView, WhoamiView } from '../common/dashboard-types.js';
import { api, ApiError } from './api.js';
import { AppPage } from './pages/app-page.js';
import { LoginPage } from './pages/login-page.js';
import { OverviewPage } from './pages/overview-page.js';
import { useRoute } from './route.js';
import { clearSession, currentSession, onSessionChange, saveSession, type Session } from './session.js';

/** Takes a `#login=CODE` fragment off the URL at once and trades the code for a session. */
async function redeemLoginFragment(): Promise<string | null> {
  const m = /^#login=([A-Za-z0-9_-]+)$/.exec(location.hash);
  if (!m?.[1]) return null;
  history.replaceState(null, '', `${location.pathname}#/`);
  try {
    const { session } = await api<{ session: DashboardSessionView }>('POST', '/v1/dashboard/login', { json: { code: m[1] }, token: '' });
    saveSession(session);
    return null;
  } catch (err) {
    return err instanceof ApiError ? err.message : 'The login link could not be used; run `hangar dashboard` for a new one.';
  }
}

function Shell({ session, whoami }: { session: Session; whoami: WhoamiView }) {
  const route = useRoute();
  const logout = async () => {
    try {
      await api('DELETE', '/v1/dashboard/session');
    } catch {
      // Ending it server-side is a courtesy: the tab forgets it either way.
    }
    clearSession(null);
  };
  return (
    <div class="shell">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href="#/">
          Hangar
        </a>
        <nav aria-label="Breadcrumb" class="crumbs">
          {route.page === 'app' ? (
            <>
              <a href="#/">Overview</a> <span aria-hidden="true">/</span> <span aria-current="page">{route.app}</span>
            </>
          ) : (
            <span aria-current="page">Overview</span>
          )}
        </nav>
        <span class="who" data-scope={session.scope}>
          {whoami.name} · <strong>{session.scope}</strong>
        </span>
        <button type="button" class="ghost" onClick={() => void logout()}>
          Log out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {route.page === 'app' ? <AppPage app={route.app} tab={route.tab} focus={route.focus} scope={session.scope} /> : <OverviewPage />}
      </main>
    </div>
  );
}

function Root() {
  const [session, setSession] = useState<Session | null>(() => currentSession());
  const [whoami, setWhoami] = useState<WhoamiView | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [booting, setBooting] = useState(true);

  useEffect(() => {
    const off = onSessionChange((s, reason) => {
      setSession(s);
      setWhoami(null);
      if (reason !== null) setNotice(reason);
    });
    void redeemLoginFragment().then((message) => {
      if (message) setNotice(message);
      setBooting(false);
    });
    return off;
  }, []);

  useEffect(() => {
    if (!session) return;
    let cancelled = false;
    api<{ whoami: WhoamiView }>('GET', '/v1/whoami')
      .then(({ whoami: w }) => !cancelled && setWhoami(w))
      .catch((err: unknown) => !cancelled && setNotice(err instanceof ApiError ? err.message : String(err)));
    return () => {
      cancelled = true;
    };
  }, [session?.token]);

  if (booting) return <p class="boot">Logging in…</p>;
  if (!session) return <LoginPage notice={notice} />;
  if (!whoami) return <p class="boot">{notice ?? 'Loading…'}</p>;
  return <Shell session={session} whoami={whoami} />;
}

const root = document.getElementById('root');
if (root) {
  root.textContent = '';
  render(<Root />, root);
}
