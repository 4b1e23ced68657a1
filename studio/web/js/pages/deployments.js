// Deployments: the list with status, replicas, target and errors; deploy a model; undeploy.
import { useState } from '../../vendor/hooks.mjs';
import { api, pathPart } from '../api.js';
import { when } from '../format.js';
import { html } from '../html.js';
import { ErrorMessage, Field, Loading, Page, Status, useAction, useInterval, useResource } from '../ui.js';

const MOVING = new Set(['deploying', 'deleting']);

function DeployForm({ models, onDeployed }) {
  const undeployed = models.filter((m) => !m.deployment);
  const [form, setForm] = useState({ model: '', target: 'serve', min_replicas: '1', max_replicas: '1',
    target_ongoing_requests: '8' });
  const [run, busy, error] = useAction();
  const set = (name) => (e) => { const { value } = e.currentTarget; setForm((old) => ({ ...old, [name]: value })); };
  const model = form.model || (undeployed[0] && undeployed[0].id) || '';
  const submit = (event) => {
    event.preventDefault();
    run(async () => {
      await api.post('/v1/deployments', {
        model,
        target: form.target,
        min_replicas: Number(form.min_replicas),
        max_replicas: Number(form.max_replicas),
        target_ongoing_requests: Number(form.target_ongoing_requests),
      });
      setForm((old) => ({ ...old, model: '' }));
      onDeployed();
    });
  };
  return html`<form class="card deploy-form" onSubmit=${submit} aria-labelledby="deploy-title">
    <h2 id="deploy-title">Deploy a model</h2>
    <div class="grid">
      <${Field} label="Model" id="deploy-model">
        <select id="deploy-model" value=${model} onChange=${set('model')}>
          ${undeployed.map((m) => html`<option value=${m.id}>${m.id} (${m.kind})</option>`)}
        </select>
      <//>
      <${Field} label="Target" id="deploy-target">
        <select id="deploy-target" value=${form.target} onChange=${set('target')}>
          <option value="serve">Ray Serve</option>
          <option value="kubernetes">Kubernetes</option>
        </select>
      <//>
      <${Field} label="Min replicas" id="deploy-min" hint="0 scales to zero when idle">
        <input id="deploy-min" type="number" min="0" value=${form.min_replicas} onInput=${set('min_replicas')} />
      <//>
      <${Field} label="Max replicas" id="deploy-max">
        <input id="deploy-max" type="number" min="1" value=${form.max_replicas} onInput=${set('max_replicas')} />
      <//>
      <${Field} label="Target ongoing requests" id="deploy-ongoing" hint="per replica, for autoscaling">
        <input id="deploy-ongoing" type="number" min="1" step="any" value=${form.target_ongoing_requests}
          onInput=${set('target_ongoing_requests')} />
      <//>
    </div>
    <button type="submit" class="primary" disabled=${busy || !model}>${busy ? 'Deploying…' : 'Deploy'}</button>
    <${ErrorMessage} error=${error} />
  </form>`;
}

function Row({ deployment: d, onChanged }) {
  const [run, busy, error] = useAction();
  const undeploy = () => run(async () => {
    await api.delete(`/v1/deployments/${pathPart(d.id)}`);
    onChanged();
  });
  return html`<tr data-model=${d.model}>
    <td><code>${d.model}</code><div class="muted small">${d.id}</div></td>
    <td>${d.kind}${d.placement === 'adapter' ? ' (adapter on its base)' : ''}</td>
    <td>${d.target}</td>
    <td><${Status} value=${d.status} /></td>
    <td>${d.min_replicas}–${d.max_replicas}</td>
    <td>${when(d.ready_at || d.created_at)}</td>
    <td>${d.error ? html`<span class="error">${d.error}</span>` : '—'}<${ErrorMessage} error=${error} /></td>
    <td>${d.status === 'deleting' ? null : html`<button type="button" class="danger" disabled=${busy}
      onClick=${undeploy} aria-label=${`Undeploy ${d.model}`}>Undeploy</button>`}</td>
  </tr>`;
}

export function DeploymentsPage() {
  const deployments = useResource((signal) => api.get('/v1/deployments', { signal }), []);
  const models = useResource((signal) => api.get('/v1/models', { signal }), []);
  const rows = deployments.data ? deployments.data.data : [];
  const reload = () => { deployments.reload(); models.reload(); };
  useInterval(reload, 2000, rows.some((d) => MOVING.has(d.status)));
  return html`<${Page} title="Deployments">
    <${ErrorMessage} error=${deployments.error || models.error} />
    ${models.data ? html`<${DeployForm} models=${models.data.data} onDeployed=${reload} />` : null}
    <section aria-labelledby="deployments-title">
      <h2 id="deployments-title">Deployed models</h2>
      ${deployments.loading && !deployments.data ? html`<${Loading} />` : null}
      ${deployments.data && !rows.length ? html`<p class="muted">Nothing deployed.</p>` : null}
      ${rows.length ? html`<table class="deployments">
        <thead><tr><th scope="col">Model</th><th scope="col">Kind</th><th scope="col">Target</th>
          <th scope="col">Status</th><th scope="col">Replicas</th><th scope="col">Since</th>
          <th scope="col">Error</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
        <tbody>${rows.map((d) => html`<${Row} key=${d.id} deployment=${d} onChanged=${reload} />`)}</tbody>
      </table>` : null}
    </section>
  <//>`;
}
