// The app shell: sign-in, navigation and hash routing (#/datasets, #/jobs/<id>, ...).
import { render } from '../vendor/preact.mjs';
import { useEffect, useState } from '../vendor/hooks.mjs';
import { api, session } from './api.js';
import { html } from './html.js';
import { ErrorMessage, Field, useAction } from './ui.js';
import { DatasetsPage } from './pages/datasets.js';
import { NewJobPage } from './pages/new_job.js';
import { JobPage, JobsPage } from './pages/jobs.js';
import { ComparePage } from './pages/compare.js';
import { DeploymentsPage } from './pages/deployments.js';
import { PlaygroundPage } from './pages/playground.js';
import { AdminPage } from './pages/admin.js';

const CLIENT_PAGES = [
  ['datasets', 'Datasets'],
  ['new', 'New fine-tune'],
  ['jobs', 'Jobs'],
  ['compare', 'Compare'],
  ['deployments', 'Deployments'],
  ['playground', 'Playground'],
];
const ADMIN_PAGES = [['admin', 'Admin']];

/** Parse `#/jobs/ftjob-1?x=y` into {name: 'jobs', id: 'ftjob-1', query: URLSearchParams}. */
function parseHash(hash) {
  const [path, search = ''] = hash.replace(/^#\/?/, '').split('?');
  const [name = '', ...rest] = path.split('/');
  return { name, id: rest.length ? decodeURIComponent(rest.join('/')) : null, query: new URLSearchParams(search) };
}

function useRoute() {
  const [hash, setHash] = useState(window.location.hash);
  useEffect(() => {
    const changed = () => setHash(window.location.hash);
    window.addEventListener('hashchange', changed);
    return () => window.removeEventListener('hashchange', changed);
  }, []);
  return parseHash(hash);
}

/**
 * Sign in: a client key answers /v1/me; the admin key is refused there and answers /admin/clients.
 * A key that is neither shows the API's own message for /v1/me.
 */
async function signIn(key) {
  try {
    const me = await api.get('/v1/me', { key });
    return { role: 'client', name: me.name };
  } catch (clientError) {
    if (clientError.status !== 401) throw clientError;
    try {
      await api.get('/admin/clients', { key, query: { limit: 1 } });
      return { role: 'admin', name: 'admin' };
    } catch {
      throw clientError;
    }
  }
}

function SignIn({ onSignedIn }) {
  const [key, setKey] = useState('');
  const [run, busy, error] = useAction();
  const submit = (event) => {
    event.preventDefault();
    run(async () => {
      const who = await signIn(key.trim());
      session.save(key.trim(), who.role, who.name);
      onSignedIn();
    });
  };
  return html`<main id="main" class="sign-in">
    <h1>Mini Studio</h1>
    <p>Sign in with your client API key (or the admin key). It stays in this tab only.</p>
    <form onSubmit=${submit} aria-describedby=${error ? 'sign-in-error' : null}>
      <${Field} label="API key" id="api-key">
        <input id="api-key" type="password" autocomplete="off" required value=${key}
          onInput=${(e) => setKey(e.currentTarget.value)} />
      <//>
      <button type="submit" disabled=${busy || !key.trim()}>${busy ? 'Signing in…' : 'Sign in'}</button>
      <${ErrorMessage} error=${error} id="sign-in-error" />
    </form>
  </main>`;
}

function Content({ route }) {
  switch (route.name) {
    case 'datasets': return html`<${DatasetsPage} selected=${route.id} />`;
    case 'new': return html`<${NewJobPage} query=${route.query} />`;
    case 'jobs': return route.id ? html`<${JobPage} jobId=${route.id} />` : html`<${JobsPage} />`;
    case 'compare': return html`<${ComparePage} query=${route.query} />`;
    case 'deployments': return html`<${DeploymentsPage} />`;
    case 'playground': return html`<${PlaygroundPage} query=${route.query} />`;
    case 'admin': return html`<${AdminPage} />`;
    default: return html`<p>No such page.</p>`;
  }
}

function App() {
  const [signedIn, setSignedIn] = useState(Boolean(session.key));
  const route = useRoute();
  const pages = session.role === 'admin' ? ADMIN_PAGES : CLIENT_PAGES;
  useEffect(() => {
    if (signedIn && !pages.some(([name]) => name === route.name)) window.location.hash = `#/${pages[0][0]}`;
  }, [signedIn, route.name]);
  if (!signedIn) return html`<${SignIn} onSignedIn=${() => setSignedIn(true)} />`;
  const signOut = () => { session.clear(); setSignedIn(false); };
  return html`
    <a class="skip" href="#main" onClick=${(e) => { e.preventDefault(); document.getElementById('main').focus(); }}>
      Skip to content</a>
    <header class="top">
      <span class="brand">Mini Studio</span>
      <nav aria-label="Main">
        <ul>${pages.map(([name, label]) => html`<li>
          <a href=${`#/${name}`} aria-current=${route.name === name ? 'page' : null}>${label}</a></li>`)}
        </ul>
      </nav>
      <span class="who">Signed in as <strong>${session.name}</strong>${session.role === 'admin' ? ' (admin)' : ''}</span>
      <button type="button" class="link" onClick=${signOut}>Sign out</button>
    </header>
    <main id="main" tabindex="-1">
      ${pages.some(([name]) => name === route.name) ? html`<${Content} route=${route} />` : null}
    </main>`;
}

render(html`<${App} />`, document.getElementById('app'));
