// Admin (admin key): clients and their limits, keys (a new key's secret is shown once), and the
// base-model registry.
import { useState } from '../../vendor/hooks.mjs';
import { api, listAll, pathPart } from '../api.js';
import { params, when } from '../format.js';
import { html } from '../html.js';
import { ErrorMessage, Field, Loading, Page, Status, useAction, useResource } from '../ui.js';

const LIMIT_FIELDS = [
  ['max_concurrent_jobs', 'Max concurrent jobs', '2'],
  ['max_deployments', 'Max deployments', '2'],
  ['requests_per_minute', 'Requests per minute', '600'],
];

const EMPTY_CLIENT = { name: '', max_concurrent_jobs: '', max_deployments: '', requests_per_minute: '',
  allowed_base_models: '' };

function NewClient({ onCreated }) {
  const [form, setForm] = useState(EMPTY_CLIENT);
  const [run, busy, error] = useAction();
  const set = (name) => (e) => { const { value } = e.currentTarget; setForm((old) => ({ ...old, [name]: value })); };
  const submit = (event) => {
    event.preventDefault();
    run(async () => {
      const limits = {};
      for (const [name] of LIMIT_FIELDS) if (form[name].trim()) limits[name] = Number(form[name]);
      if (form.allowed_base_models.trim()) {
        limits.allowed_base_models = form.allowed_base_models.split(',').map((m) => m.trim()).filter(Boolean);
      }
      const body = { name: form.name.trim() };
      if (Object.keys(limits).length) body.limits = limits;
      const client = await api.post('/admin/clients', body);
      setForm(EMPTY_CLIENT);
      onCreated(client);
    });
  };
  return html`<form class="card" onSubmit=${submit} aria-labelledby="new-client-title">
    <h3 id="new-client-title">New client</h3>
    <div class="grid">
      <${Field} label="Client name" id="client-name">
        <input id="client-name" required value=${form.name} onInput=${set('name')} />
      <//>
      ${LIMIT_FIELDS.map(([name, label, fallback]) => html`<${Field} label=${label} id=${`client-${name}`}
        hint=${`default ${fallback}`}>
        <input id=${`client-${name}`} type="number" min="0" value=${form[name]} onInput=${set(name)}
          placeholder=${fallback} />
      <//>`)}
      <${Field} label="Allowed base models" id="client-allowed" hint="comma-separated; default * (all)">
        <input id="client-allowed" value=${form.allowed_base_models} onInput=${set('allowed_base_models')} placeholder="*" />
      <//>
    </div>
    <button type="submit" class="primary" disabled=${busy || !form.name.trim()}>Create client</button>
    <${ErrorMessage} error=${error} />
  </form>`;
}

function Limits({ client, onSaved }) {
  const initial = () => ({
    ...Object.fromEntries(LIMIT_FIELDS.map(([name]) => [name, String(client.limits[name])])),
    allowed_base_models: client.limits.allowed_base_models.join(', '),
  });
  const [form, setForm] = useState(initial);
  const [run, busy, error] = useAction();
  const [saved, setSaved] = useState(false);
  const set = (name) => (e) => {
    const { value } = e.currentTarget;
    setSaved(false);
    setForm((old) => ({ ...old, [name]: value }));
  };
  const save = (event) => {
    event.preventDefault();
    run(async () => {
      const limits = Object.fromEntries(LIMIT_FIELDS.map(([name]) => [name, Number(form[name])]));
      limits.allowed_base_models = form.allowed_base_models.split(',').map((m) => m.trim()).filter(Boolean);
      onSaved(await api.patch(`/admin/clients/${pathPart(client.id)}`, { limits }));
      setSaved(true);
    });
  };
  return html`<form onSubmit=${save} aria-labelledby="limits-title">
    <h3 id="limits-title">Limits of ${client.name}</h3>
    <div class="grid">
      ${LIMIT_FIELDS.map(([name, label]) => html`<${Field} label=${label} id=${`limit-${name}`}>
        <input id=${`limit-${name}`} type="number" min="0" required value=${form[name]} onInput=${set(name)} />
      <//>`)}
      <${Field} label="Allowed base models" id="limit-allowed" hint="comma-separated; * for all">
        <input id="limit-allowed" value=${form.allowed_base_models} onInput=${set('allowed_base_models')} />
      <//>
    </div>
    <button type="submit" disabled=${busy}>Save limits</button>
    ${saved ? html`<span role="status"> Saved; in effect at once.</span>` : null}
    <${ErrorMessage} error=${error} />
  </form>`;
}

function Keys({ client }) {
  const keys = useResource((signal) => api.get(`/admin/clients/${pathPart(client.id)}/keys`, { signal }), [client.id]);
  const [name, setName] = useState('default');
  const [secret, setSecret] = useState(null);
  const [run, busy, error] = useAction();
  const create = (event) => {
    event.preventDefault();
    run(async () => {
      const created = await api.post(`/admin/clients/${pathPart(client.id)}/keys`, { name: name.trim() || 'default' });
      setSecret(created);
      keys.reload();
    });
  };
  const disable = (id) => run(async () => {
    await api.post(`/admin/clients/${pathPart(client.id)}/keys/${pathPart(id)}/disable`);
    keys.reload();
  });
  const rows = keys.data ? keys.data.data : [];
  return html`<section aria-labelledby="keys-title">
    <h3 id="keys-title">Keys of ${client.name}</h3>
    ${secret ? html`<div class="secret" role="status">
      <p><strong>New key ${secret.name}.</strong> Copy it now: this is the only time the secret is shown.</p>
      <p><label for="new-secret">Secret</label> <input id="new-secret" readonly value=${secret.secret}
        onFocus=${(e) => e.currentTarget.select()} size="60" />
        <button type="button" onClick=${() => navigator.clipboard && navigator.clipboard.writeText(secret.secret)}>Copy</button>
        <button type="button" onClick=${() => setSecret(null)}>Done</button></p>
    </div>` : null}
    <form class="inline-form" onSubmit=${create}>
      <label for="key-name">Key name</label>
      <input id="key-name" value=${name} onInput=${(e) => setName(e.currentTarget.value)} />
      <button type="submit" disabled=${busy}>Create key</button>
    </form>
    <${ErrorMessage} error=${error || keys.error} />
    ${rows.length ? html`<table>
      <thead><tr><th scope="col">Name</th><th scope="col">Id</th><th scope="col">Hint</th><th scope="col">State</th>
        <th scope="col">Created</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
      <tbody>${rows.map((k) => html`<tr><td>${k.name}</td><td><code>${k.id}</code></td><td><code>${k.hint}</code></td>
        <td><${Status} value=${k.disabled ? 'disabled' : 'active'} /></td><td>${when(k.created_at)}</td>
        <td>${k.disabled ? null : html`<button type="button" class="danger" disabled=${busy} onClick=${() => disable(k.id)}
          aria-label=${`Disable key ${k.name} (${k.hint})`}>Disable</button>`}</td></tr>`)}</tbody>
    </table>` : html`<p class="muted">No keys.</p>`}
  </section>`;
}

function Clients() {
  const clients = useResource(() => listAll('/admin/clients'), []);
  const [chosen, setChosen] = useState(null);
  const [run, busy, error] = useAction();
  const rows = clients.data || [];
  const toggle = (client) => run(async () => {
    await api.post(`/admin/clients/${pathPart(client.id)}/${client.disabled ? 'enable' : 'disable'}`);
    clients.reload();
  });
  const current = rows.find((c) => c.id === chosen);
  return html`<section class="card" aria-labelledby="clients-title">
    <h2 id="clients-title">Clients</h2>
    <${ErrorMessage} error=${error || clients.error} />
    ${clients.loading && !clients.data ? html`<${Loading} />` : null}
    ${rows.length ? html`<table class="clients">
      <thead><tr><th scope="col">Name</th><th scope="col">Id</th><th scope="col">State</th>
        <th scope="col">Jobs</th><th scope="col">Deployments</th><th scope="col">Requests/min</th>
        <th scope="col">Base models</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
      <tbody>${rows.map((c) => html`<tr aria-selected=${c.id === chosen ? 'true' : null}>
        <td>${c.name}</td><td><code>${c.id}</code></td><td><${Status} value=${c.disabled ? 'disabled' : 'active'} /></td>
        <td>${c.limits.max_concurrent_jobs}</td><td>${c.limits.max_deployments}</td>
        <td>${c.limits.requests_per_minute}</td><td>${c.limits.allowed_base_models.join(', ')}</td>
        <td><button type="button" onClick=${() => setChosen(c.id)} aria-label=${`Limits and keys of ${c.name}`}>Manage</button>
          <button type="button" disabled=${busy} onClick=${() => toggle(c)}>${c.disabled ? 'Enable' : 'Disable'}</button></td>
      </tr>`)}</tbody></table>` : null}
    ${current ? html`<div class="card" key=${current.id}>
      <${Limits} client=${current} onSaved=${() => clients.reload()} />
      <${Keys} client=${current} />
    </div>` : null}
    <${NewClient} onCreated=${(client) => { clients.reload(); setChosen(client.id); }} />
  </section>`;
}

function BaseModels() {
  const models = useResource((signal) => api.get('/admin/base-models', { signal }), []);
  const [form, setForm] = useState({ name: '', source: '', description: '', config: '', chat_template: true });
  const [run, busy, error] = useAction();
  const set = (name) => (e) => { const { value } = e.currentTarget; setForm((old) => ({ ...old, [name]: value })); };
  const register = (event) => {
    event.preventDefault();
    run(async () => {
      const body = { name: form.name.trim(), chat_template: form.chat_template };
      if (form.source.trim()) body.source = form.source.trim();
      if (form.description.trim()) body.description = form.description.trim();
      if (form.config.trim()) {
        try { body.config = JSON.parse(form.config); } catch (e) { throw new Error(`config.json is not valid JSON: ${e.message}`); }
      }
      await api.post('/admin/base-models', body);
      setForm({ name: '', source: '', description: '', config: '', chat_template: true });
      models.reload();
    });
  };
  const remove = (name) => run(async () => {
    await api.delete(`/admin/base-models/${pathPart(name)}`);
    models.reload();
  });
  const rows = models.data ? models.data.data : [];
  return html`<section class="card" aria-labelledby="base-models-title">
    <h2 id="base-models-title">Base models</h2>
    <${ErrorMessage} error=${error || models.error} />
    ${rows.length ? html`<table>
      <thead><tr><th scope="col">Name</th><th scope="col">Source</th><th scope="col">Parameters</th>
        <th scope="col">Context</th><th scope="col">Chat template</th><th scope="col">Added</th>
        <th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
      <tbody>${rows.map((m) => html`<tr><td>${m.id}${m.builtin ? html` <span class="badge">built in</span>` : null}</td>
        <td><code>${m.source}</code></td><td>${params(m.parameters)}</td><td>${m.context_length}</td>
        <td>${m.chat_template ? 'yes' : 'no'}</td><td>${when(m.created_at)}</td>
        <td>${m.builtin ? null : html`<button type="button" class="danger" disabled=${busy} onClick=${() => remove(m.id)}
          aria-label=${`Remove ${m.id}`}>Remove</button>`}</td></tr>`)}</tbody>
    </table>` : null}
    <form onSubmit=${register} aria-labelledby="register-title">
      <h3 id="register-title">Register a base model</h3>
      <div class="grid">
        <${Field} label="Name" id="bm-name"><input id="bm-name" required value=${form.name} onInput=${set('name')}
          placeholder="org/model" /><//>
        <${Field} label="Source" id="bm-source" hint="Hugging Face id or a directory every node can read; default: the name">
          <input id="bm-source" value=${form.source} onInput=${set('source')} /><//>
        <${Field} label="Description" id="bm-description"><input id="bm-description" value=${form.description}
          onInput=${set('description')} /><//>
      </div>
      <${Field} label="config.json (optional when the source is a local directory)" id="bm-config">
        <textarea id="bm-config" rows="3" value=${form.config} onInput=${set('config')}></textarea><//>
      <label><input type="checkbox" checked=${form.chat_template}
        onChange=${(e) => setForm((old) => ({ ...old, chat_template: e.currentTarget.checked }))} /> Has a chat template</label>
      <div><button type="submit" class="primary" disabled=${busy || !form.name.trim()}>Register</button></div>
    </form>
  </section>`;
}

export function AdminPage() {
  return html`<${Page} title="Admin">
    <${Clients} />
    <${BaseModels} />
  <//>`;
}
