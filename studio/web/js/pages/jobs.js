// Jobs: the list, and one job live (status, progress and ETA, loss curves from the events stream,
// learning rate, tokens/s, events, checkpoints, cancel, deploy the result).
import { useState } from '../../vendor/hooks.mjs';
import { api, pathPart } from '../api.js';
import { LineChart } from '../chart.js';
import { curvesOf, useJobEvents } from '../events.js';
import { count, duration, number, when } from '../format.js';
import { html } from '../html.js';
import { ErrorMessage, Facts, Loading, Page, Status, useAction, useInterval, useResource } from '../ui.js';

export const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);
const SHOWN_EVENTS = 200;

export function JobsPage() {
  const jobs = useResource((signal) => api.get('/v1/fine_tuning/jobs', { query: { limit: 100 }, signal }), []);
  const rows = jobs.data ? jobs.data.data : [];
  useInterval(jobs.reload, 3000, rows.some((j) => !FINISHED.has(j.status)));
  const actions = html`<a class="button primary" href="#/new">New fine-tune</a>`;
  return html`<${Page} title="Fine-tuning jobs" actions=${actions}>
    <${ErrorMessage} error=${jobs.error} />
    ${jobs.loading && !jobs.data ? html`<${Loading} />` : null}
    ${jobs.data && !rows.length ? html`<p class="muted">No jobs yet.</p>` : null}
    ${rows.length ? html`<table class="jobs">
      <thead><tr><th scope="col">Job</th><th scope="col">Base model</th><th scope="col">Method</th>
        <th scope="col">Status</th><th scope="col">Progress</th><th scope="col">Created</th>
        <th scope="col">Fine-tuned model</th></tr></thead>
      <tbody>${rows.map((j) => html`<tr>
        <td><a href=${`#/jobs/${encodeURIComponent(j.id)}`}>${j.id}</a>
          ${j.user_provided_suffix ? html`<div class="muted small">${j.user_provided_suffix}</div>` : null}</td>
        <td>${j.model}</td><td>${j.fine_tuning_method}</td><td><${Status} value=${j.status} /></td>
        <td>${j.progress.total_steps ? `${j.progress.step} / ${j.progress.total_steps}` : '—'}</td>
        <td>${when(j.created_at)}</td><td><code>${j.fine_tuned_model || '—'}</code></td></tr>`)}
      </tbody></table>` : null}
  <//>`;
}

function Progress({ job, latest }) {
  const p = job.progress;
  const percent = p.total_steps ? Math.round((100 * p.step) / p.total_steps) : 0;
  const eta = FINISHED.has(job.status) ? null : (latest.eta_seconds ?? p.eta_seconds);
  return html`<section class="card" aria-labelledby="progress-title">
    <h2 id="progress-title">Progress</h2>
    <div class="progress-row">
      <label for="job-progress">Step ${p.step}${p.total_steps ? ` of ${p.total_steps}` : ''}</label>
      <progress id="job-progress" max="100" value=${percent}>${percent}%</progress>
      <span>${percent}%</span>
    </div>
    <${Facts} label="Training figures" items=${[
      ['ETA', eta === null || eta === undefined ? '—' : duration(eta)],
      ['Epoch', number(latest.epoch ?? p.epoch, 2)],
      ['Training loss', number(latest.train_loss ?? p.train_loss)],
      ['Validation loss', number(latest.valid_loss ?? p.valid_loss)],
      ['Learning rate', number(latest.learning_rate ?? p.learning_rate)],
      ['Tokens/s', number(latest.tokens_per_second ?? p.tokens_per_second, 1)],
      ['Trained tokens', count(latest.trained_tokens ?? job.trained_tokens)],
    ]} />
  </section>`;
}

function Checkpoints({ jobId, version }) {
  const checkpoints = useResource(
    (signal) => api.get(`/v1/fine_tuning/jobs/${pathPart(jobId)}/checkpoints`, { query: { limit: 100 }, signal }),
    [jobId, version],
  );
  const rows = checkpoints.data ? checkpoints.data.data : [];
  return html`<section class="card" aria-labelledby="checkpoints-title">
    <h2 id="checkpoints-title">Checkpoints</h2>
    <${ErrorMessage} error=${checkpoints.error} />
    ${rows.length ? html`<div class="scroll" tabindex="0" aria-label="Checkpoint list"><table>
      <thead><tr><th scope="col">Step</th><th scope="col">Training loss</th><th scope="col">Validation loss</th>
        <th scope="col">Model name</th></tr></thead>
      <tbody>${rows.map((c) => html`<tr><td>${c.step_number}</td><td>${number(c.metrics.train_loss)}</td>
        <td>${number(c.metrics.valid_loss)}</td><td><code>${c.fine_tuned_model_checkpoint}</code></td></tr>`)}
      </tbody></table></div>` : html`<p class="muted">None yet.</p>`}
  </section>`;
}

function Deploy({ model }) {
  const info = useResource((signal) => api.get(`/v1/models/${pathPart(model)}`, { signal }), [model]);
  const [own, setOwn] = useState(null);
  const [run, busy, error] = useAction();
  // The deployment's own record is the truth; /v1/models shows what the answering ingress replica
  // routes, which may lag a moment behind a deployment just made.
  const deployment = own || (info.data && info.data.deployment);
  const moving = Boolean(deployment && (deployment.status === 'deploying' || deployment.status === 'deleting'));
  useInterval(async () => {
    try {
      setOwn(await api.get(`/v1/deployments/${pathPart(deployment.id)}`));
    } catch (caught) {
      if (caught.status === 404) { setOwn(null); info.reload(); }
    }
  }, 2000, moving);
  const deploy = () => run(async () => setOwn(await api.post('/v1/deployments', { model })));
  return html`<div class="deploy">
    ${deployment
      ? html`<p>Deployed: <${Status} value=${deployment.status} /> (<a href="#/deployments">deployments</a>,
          <a href=${`#/playground?b=${encodeURIComponent(model)}`}>try it in the playground</a>)</p>`
      : html`<button type="button" class="primary" disabled=${busy || info.loading}
          onClick=${deploy}>Deploy the fine-tuned model</button>`}
    <${ErrorMessage} error=${error || info.error} />
  </div>`;
}

export function JobPage({ jobId }) {
  const job = useResource((signal) => api.get(`/v1/fine_tuning/jobs/${pathPart(jobId)}`, { signal }), [jobId]);
  const stream = useJobEvents(jobId);
  const [run, busy, error] = useAction();
  const data = job.data;
  const active = Boolean(data && !FINISHED.has(data.status));
  useInterval(job.reload, 2000, active);
  // Checkpoints are listed again when one is written and when the job ends.
  const checkpointEvents = stream.events.filter((e) => e.message.startsWith('Checkpoint')).length;
  const checkpointsVersion = `${checkpointEvents}:${data ? data.status : ''}`;
  const curves = curvesOf(stream.events);
  const cancel = () => run(async () => {
    job.setData(await api.post(`/v1/fine_tuning/jobs/${pathPart(jobId)}/cancel`));
  });
  const title = `Job ${jobId}`;
  if (!data) {
    return html`<${Page} title=${title}>${job.error ? html`<${ErrorMessage} error=${job.error} />` : html`<${Loading} />`}<//>`;
  }
  const actions = active ? html`<button type="button" class="danger" disabled=${busy} onClick=${cancel}>Cancel job</button>` : null;
  const hp = data.hyperparameters;
  return html`<${Page} title=${title} actions=${actions}>
    <${ErrorMessage} error=${error} />
    <div class="summary">
      <p>Status: <${Status} value=${data.status} />${data.attempts > 1 ? ` (attempt ${data.attempts})` : ''}</p>
      <${Facts} label="Job" items=${[
        ['Base model', data.model],
        ['Method', data.fine_tuning_method],
        ['Training file', html`<a href=${`#/datasets/${encodeURIComponent(data.training_file)}`}>${data.training_file}</a>`],
        ['Epochs / batch / lr ×', `${hp.n_epochs} / ${hp.batch_size} / ${hp.learning_rate_multiplier}`],
        data.lora ? ['LoRA', `r ${data.lora.r}, alpha ${data.lora.alpha}, dropout ${data.lora.dropout}`] : null,
        ['Created', when(data.created_at)],
        ['Finished', when(data.finished_at)],
        ['Fine-tuned model', data.fine_tuned_model ? html`<code>${data.fine_tuned_model}</code>` : '—'],
      ]} />
      ${data.error ? html`<p class="error" role="alert">${data.error.message}</p>` : null}
      ${data.status === 'succeeded' && data.fine_tuned_model ? html`<${Deploy} model=${data.fine_tuned_model} />` : null}
    </div>
    <section class="card" aria-labelledby="curve-title">
      <h2 id="curve-title">Loss</h2>
      <${LineChart} label=${`Training and validation loss of ${jobId}`} filename=${`${jobId}-loss`} series=${[
        { name: 'training loss', points: curves.train },
        { name: 'validation loss', points: curves.valid, dashed: true },
      ]} />
      ${stream.error ? html`<p class="muted" role="status">Events stream: ${stream.error.message} (reconnecting)</p>` : null}
    </section>
    <div class="split">
      <${Progress} job=${data} latest=${curves.latest} />
      <${Checkpoints} jobId=${jobId} version=${checkpointsVersion} />
    </div>
    <section class="card" aria-labelledby="events-title">
      <h2 id="events-title">Events</h2>
      <ol class="events" aria-live="off">
        ${stream.events.slice(-SHOWN_EVENTS).reverse().map((e) => html`<li class=${`level-${e.level}`}>
          <time>${when(e.created_at)}</time> ${e.message}</li>`)}
      </ol>
    </section>
  <//>`;
}
