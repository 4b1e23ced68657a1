// Compare: two or more jobs' loss curves on one chart and their settings side by side, the rows that
// differ highlighted. The chosen jobs live in the address (#/compare?jobs=a,b) so a view can be shared.
import { useEffect, useState } from '../../vendor/hooks.mjs';
import { api, pathPart } from '../api.js';
import { LineChart, PALETTE } from '../chart.js';
import { curvesOf, storedEvents } from '../events.js';
import { FINISHED } from './jobs.js';
import { count, duration, number } from '../format.js';
import { html } from '../html.js';
import { ErrorMessage, Loading, Page, Status, useResource } from '../ui.js';

const REFRESH_MS = 5000;

/**
 * Load each job and all its stored events; jobs still running are loaded again every few seconds.
 * Polled rather than streamed: a browser keeps about six connections per server, and each stream holds one.
 */
function useJobsWithCurves(ids) {
  const [state, setState] = useState({});
  useEffect(() => {
    const controller = new AbortController();
    const { signal } = controller;
    let timer = null;
    const load = async (id) => {
      try {
        const job = await api.get(`/v1/fine_tuning/jobs/${pathPart(id)}`, { signal });
        const curves = curvesOf(await storedEvents(id, signal));
        setState((old) => ({ ...old, [id]: { job, curves } }));
        return FINISHED.has(job.status);
      } catch (error) {
        if (!signal.aborted) setState((old) => ({ ...old, [id]: { error } }));
        return true;
      }
    };
    const round = async (pending) => {
      const finished = await Promise.all(pending.map(load));
      const running = pending.filter((_, i) => !finished[i]);
      if (running.length && !signal.aborted) timer = setTimeout(() => round(running), REFRESH_MS);
    };
    round(ids);
    return () => { controller.abort(); clearTimeout(timer); };
  }, [ids.join(',')]);
  return state;
}

const ROWS = [
  ['Status', (j) => j.status],
  ['Base model', (j) => j.model],
  ['Method', (j) => j.fine_tuning_method],
  ['Epochs', (j) => j.hyperparameters.n_epochs],
  ['Batch size', (j) => j.hyperparameters.batch_size],
  ['Learning-rate multiplier', (j) => j.hyperparameters.learning_rate_multiplier],
  ['LoRA rank', (j) => (j.lora ? j.lora.r : '—')],
  ['LoRA alpha', (j) => (j.lora ? j.lora.alpha : '—')],
  ['LoRA dropout', (j) => (j.lora ? j.lora.dropout : '—')],
  ['LoRA target modules', (j) => (j.lora ? j.lora.target_modules.join(', ') : '—')],
  ['Seed', (j) => j.seed],
  ['Suffix', (j) => j.user_provided_suffix || '—'],
  ['Training file', (j) => j.training_file],
  ['Validation file', (j) => j.validation_file || '—'],
  ['Steps', (j) => j.progress.total_steps ?? '—'],
  ['Trained tokens', (j) => count(j.trained_tokens)],
  ['Final training loss', (j, c) => number(c && c.train.length ? c.train[c.train.length - 1][1] : j.progress.train_loss)],
  ['Final validation loss', (j, c) => number(c && c.valid.length ? c.valid[c.valid.length - 1][1] : j.progress.valid_loss)],
  ['Created to finished', (j) => (j.finished_at ? duration(j.finished_at - j.created_at) : '—')],
];

function Picker({ jobs, chosen }) {
  const toggle = (id, on) => {
    const next = on ? [...chosen, id] : chosen.filter((c) => c !== id);
    window.location.hash = next.length ? `#/compare?jobs=${next.map(encodeURIComponent).join(',')}` : '#/compare';
  };
  return html`<fieldset class="card picker">
    <legend>Jobs to compare (choose two or more)</legend>
    <ul>${jobs.map((j) => html`<li><label>
      <input type="checkbox" checked=${chosen.includes(j.id)} onChange=${(e) => toggle(j.id, e.currentTarget.checked)} />
      ${' '}${j.id}${j.user_provided_suffix ? ` (${j.user_provided_suffix})` : ''} — <${Status} value=${j.status} /></label></li>`)}
    </ul>
  </fieldset>`;
}

export function ComparePage({ query }) {
  const chosen = (query.get('jobs') || '').split(',').filter(Boolean);
  const jobs = useResource((signal) => api.get('/v1/fine_tuning/jobs', { query: { limit: 100 }, signal }), []);
  const loaded = useJobsWithCurves(chosen);
  const ready = chosen.map((id) => [id, loaded[id]]).filter(([, entry]) => entry && entry.job);
  const [axis, setAxis] = useState('step');
  const series = [];
  ready.forEach(([id, { job, curves }], i) => {
    const color = PALETTE[i % PALETTE.length];
    // By epoch, runs with different batch sizes or dataset sizes line up.
    const perStep = job.progress.total_steps ? job.hyperparameters.n_epochs / job.progress.total_steps : 0;
    const along = (points) => (axis === 'epoch' && perStep ? points.map(([x, y]) => [x * perStep, y]) : points);
    series.push({ name: `${id} training loss`, points: along(curves.train), color });
    if (curves.valid.length) {
      series.push({ name: `${id} validation loss`, points: along(curves.valid), color, dashed: true });
    }
  });
  return html`<${Page} title="Compare jobs">
    <${ErrorMessage} error=${jobs.error} />
    ${jobs.data ? html`<${Picker} jobs=${jobs.data.data} chosen=${chosen} />` : html`<${Loading} />`}
    ${chosen.map((id) => (loaded[id] && loaded[id].error ? html`<${ErrorMessage} error=${loaded[id].error} />` : null))}
    ${chosen.length < 2 ? html`<p class="muted">Choose at least two jobs.</p>` : null}
    ${ready.length ? html`<section class="card" aria-labelledby="compare-curve-title">
      <h2 id="compare-curve-title">Loss curves</h2>
      <fieldset class="axis">
        <legend>Horizontal axis</legend>
        ${['step', 'epoch'].map((name) => html`<label><input type="radio" name="axis" value=${name}
          checked=${axis === name} onChange=${() => setAxis(name)} /> ${name}</label>`)}
      </fieldset>
      <${LineChart} label=${`Training and validation loss comparison of ${ready.map(([id]) => id).join(', ')}`}
        filename="compare-loss" series=${series} xLabel=${axis} xIntegers=${axis === 'step'} />
    </section>
    <section class="card" aria-labelledby="compare-table-title">
      <h2 id="compare-table-title">Settings and results</h2>
      <table class="compare">
        <thead><tr><th scope="col">Setting</th>${ready.map(([id]) => html`<th scope="col">
          <a href=${`#/jobs/${encodeURIComponent(id)}`}>${id}</a></th>`)}</tr></thead>
        <tbody>${ROWS.map(([name, value]) => {
          const values = ready.map(([, { job, curves }]) => String(value(job, curves)));
          const differs = new Set(values).size > 1;
          return html`<tr class=${differs ? 'differs' : null}>
            <th scope="row">${name}${differs ? html`<span class="badge">differs</span>` : null}</th>
            ${values.map((v) => html`<td>${v}</td>`)}</tr>`;
        })}</tbody>
      </table>
    </section>` : null}
  <//>`;
}
