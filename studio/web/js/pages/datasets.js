// Datasets: drag-and-drop upload with progress, the list, and one file's validation report,
// statistics and preview; delete.
import { useState } from '../../vendor/hooks.mjs';
import { api, pathPart } from '../api.js';
import { bytes, count, number, when } from '../format.js';
import { html } from '../html.js';
import { ErrorMessage, Facts, Loading, Page, Status, useAction, useInterval, useResource } from '../ui.js';
import { uploadDataset } from '../upload.js';

const UNSETTLED = new Set(['uploaded', 'validating']);

function DropZone({ onUploaded }) {
  const [over, setOver] = useState(false);
  const [progress, setProgress] = useState(null);
  const [model, setModel] = useState('');
  const [run, busy, error] = useAction();
  const models = useResource(() => api.get('/v1/fine_tuning/base_models'), []);

  const upload = (files) => {
    const file = files && files[0];
    if (!file || busy) return;
    run(async () => {
      setProgress({ name: file.name, sent: 0, total: file.size, note: '' });
      const uploaded = await uploadDataset(file, {
        model: model || undefined,
        onProgress: (p) => setProgress({ name: file.name, ...p }),
      });
      setProgress((p) => ({ ...p, sent: p.total, note: 'done' }));
      onUploaded(uploaded);
    });
  };
  const drop = (event) => {
    event.preventDefault();
    setOver(false);
    upload(event.dataTransfer.files);
  };
  const percent = progress && progress.total ? Math.round((100 * progress.sent) / progress.total) : 0;
  return html`<div class="upload">
    <div class=${`dropzone${over ? ' over' : ''}`} data-testid="dropzone"
      onDragOver=${(e) => { e.preventDefault(); setOver(true); }} onDragLeave=${() => setOver(false)} onDrop=${drop}>
      <p><strong>Drop a JSONL file here</strong> or</p>
      <input id="dataset-file" class="visually-hidden" type="file" accept=".jsonl,application/jsonl"
        onChange=${(e) => { upload(e.currentTarget.files); e.currentTarget.value = ''; }} />
      <label class="button" for="dataset-file">Choose a file…</label>
      <p class="hint">Chat, prompt/completion or preference rows, one JSON object per line. Big files go up in
        parts and resume after a dropped connection.</p>
      <div class="field inline">
        <label for="tokenizer-model">Count tokens with</label>
        <select id="tokenizer-model" value=${model} onChange=${(e) => setModel(e.currentTarget.value)}>
          <option value="">an estimate (characters / 4)</option>
          ${(models.data ? models.data.data : []).map((m) => html`<option value=${m.id}>${m.id}</option>`)}
        </select>
      </div>
    </div>
    ${progress ? html`<div class="progress-row">
      <label for="upload-progress">Uploading ${progress.name}</label>
      <progress id="upload-progress" max="100" value=${percent}>${percent}%</progress>
      <span aria-live="polite">${percent}% (${bytes(progress.sent)} of ${bytes(progress.total)})
        ${progress.note ? ` — ${progress.note}` : ''}</span>
    </div>` : null}
    <${ErrorMessage} error=${error} />
  </div>`;
}

function Issues({ title, issues, total, kind }) {
  if (!issues.length) return null;
  return html`<section aria-labelledby=${`${kind}-title`}>
    <h3 id=${`${kind}-title`}>${title} (${total ?? issues.length})</h3>
    <table class=${kind}>
      <thead><tr><th scope="col">Line</th><th scope="col">Field</th><th scope="col">Code</th>
        <th scope="col">Message</th></tr></thead>
      <tbody>${issues.map((issue) => html`<tr>
        <td>${issue.line === null ? 'file' : `Line ${issue.line}`}</td>
        <td><code>${issue.field || '—'}</code></td>
        <td><code>${issue.code}</code></td>
        <td>${issue.message}</td></tr>`)}
      </tbody>
    </table>
    ${total > issues.length ? html`<p class="muted">The first ${issues.length} of ${total} are kept.</p>` : null}
  </section>`;
}

function Distribution({ label, value }) {
  if (!value) return null;
  const max = value.max || 1;
  const bar = (name, v) => html`<div class="dist-row"><span>${name}</span>
    <span class="bar" style=${`width:${Math.max(2, (100 * v) / max)}%`}></span><span>${number(v, 1)}</span></div>`;
  return html`<figure class="distribution" aria-label=${label}>
    <figcaption>${label}</figcaption>
    ${bar('min', value.min)}${bar('p50', value.p50)}${bar('mean', value.mean)}${bar('p95', value.p95)}${bar('max', value.max)}
  </figure>`;
}

function Histogram({ label, bins }) {
  if (!bins || bins.length === 0) return null;
  const most = Math.max(...bins.map((bin) => bin.count), 1);
  return html`<figure class="distribution histogram" aria-label=${label}>
    <figcaption>${label}</figcaption>
    ${bins.map((bin) => html`<div class="dist-row hist-row">
      <span>${bin.low === bin.high ? bin.low : `${bin.low}–${bin.high}`}</span>
      <span class="bar" style=${`width:${Math.max(1, (100 * bin.count) / most)}%`}></span><span>${count(bin.count)}</span>
    </div>`)}
  </figure>`;
}

function Stats({ stats }) {
  if (!stats) return null;
  const roles = Object.entries(stats.role_counts || {}).map(([role, n]) => `${role} ${count(n)}`).join(', ');
  const epochs = Object.entries(stats.estimated_trained_tokens || {})
    .map(([n, tokens]) => `${n}: ${count(tokens)}`).join(', ');
  return html`<section aria-labelledby="stats-title">
    <h3 id="stats-title">Statistics</h3>
    <${Facts} label="Statistics" items=${[
      ['Rows', count(stats.rows)],
      ['Valid rows', count(stats.valid_rows)],
      ['Tokens', `${count(stats.tokens_total)} (${stats.token_counting})`],
      ['Trained tokens', count(stats.trained_tokens_total)],
      ['Roles', roles || '—'],
      ['Duplicates', count(stats.duplicate_rows)],
      ['Over the context length', count(stats.examples_over_context)],
      ['Without a system message', count(stats.examples_without_system)],
      ['Trained tokens by epochs', epochs || '—'],
    ]} />
    <div class="dists">
      <${Distribution} label="Tokens per example" value=${stats.tokens_per_example} />
      <${Histogram} label="Examples by tokens" bins=${stats.token_histogram} />
      <${Distribution} label="Turns per example" value=${stats.turns_per_example} />
    </div>
  </section>`;
}

function Preview({ fileId }) {
  const preview = useResource(
    (signal) => api.get(`/v1/files/${pathPart(fileId)}/preview`, { query: { rows: 5 }, signal }), [fileId],
  );
  return html`<section aria-labelledby="preview-title">
    <h3 id="preview-title">Preview (first rows)</h3>
    <${ErrorMessage} error=${preview.error} />
    ${preview.data ? html`<ol class="preview">${preview.data.rows.map((row) => html`<li>
      <pre>${JSON.stringify(row)}</pre></li>`)}</ol>` : null}
  </section>`;
}

function FileDetails({ file, onDeleted }) {
  const [confirming, setConfirming] = useState(false);
  const [run, busy, error] = useAction();
  const details = file.details;
  const remove = () => run(async () => {
    await api.delete(`/v1/files/${pathPart(file.id)}`);
    onDeleted(file.id);
  });
  return html`<article class="card" aria-labelledby="file-title">
    <h2 id="file-title">${file.filename}</h2>
    <${Facts} label="File" items=${[
      ['Id', html`<code>${file.id}</code>`],
      ['Validation', html`<${Status} value=${details.validation_status} />`],
      ['Format', details.format || '—'],
      ['Size', bytes(file.bytes)],
      ['Uploaded', when(file.created_at)],
      ['Errors', count(details.error_count)],
      ['S3 copy', details.s3.state],
    ]} />
    ${file.status_details ? html`<p>${file.status_details}</p>` : null}
    <${Issues} title="Errors" kind="errors" issues=${details.errors} total=${details.error_count} />
    <${Issues} title="Warnings" kind="warnings" issues=${details.warnings} />
    <${Stats} stats=${details.stats} />
    <${Preview} fileId=${file.id} />
    <div class="actions">
      ${details.validation_status === 'ready'
        ? html`<a class="button" href=${`#/new?file=${encodeURIComponent(file.id)}`}>Fine-tune on this file</a>` : null}
      ${confirming
        ? html`<span role="group" aria-label="Confirm delete">Delete ${file.filename}?
            <button type="button" class="danger" disabled=${busy} onClick=${remove}>Delete file</button>
            <button type="button" onClick=${() => setConfirming(false)}>Keep</button></span>`
        : html`<button type="button" class="danger" onClick=${() => setConfirming(true)}>Delete…</button>`}
    </div>
    <${ErrorMessage} error=${error} />
  </article>`;
}

export function DatasetsPage({ selected }) {
  const files = useResource((signal) => api.get('/v1/files', { query: { limit: 200 }, signal }), []);
  const rows = files.data ? files.data.data : [];
  const unsettled = rows.some((f) => UNSETTLED.has(f.details.validation_status));
  useInterval(files.reload, 2000, unsettled);
  const current = rows.find((f) => f.id === selected);
  const select = (id) => { window.location.hash = id ? `#/datasets/${encodeURIComponent(id)}` : '#/datasets'; };
  return html`<${Page} title="Datasets">
    <${DropZone} onUploaded=${(file) => { files.reload(); select(file.id); }} />
    <${ErrorMessage} error=${files.error} />
    <div class="split">
      <section aria-labelledby="files-title">
        <h2 id="files-title">Files</h2>
        ${files.loading && !files.data ? html`<${Loading} />` : null}
        ${files.data && !rows.length ? html`<p class="muted">No datasets yet: drop one above.</p>` : null}
        ${rows.length ? html`<table class="files">
          <thead><tr><th scope="col">File</th><th scope="col">Validation</th><th scope="col">Rows</th>
            <th scope="col">Size</th><th scope="col">Uploaded</th></tr></thead>
          <tbody>${rows.map((f) => html`<tr aria-selected=${f.id === selected ? 'true' : null}>
            <td><a href=${`#/datasets/${encodeURIComponent(f.id)}`}>${f.filename}</a>
              <div class="muted small"><code>${f.id}</code></div></td>
            <td><${Status} value=${f.details.validation_status} /></td>
            <td>${f.details.stats ? count(f.details.stats.rows) : '—'}</td>
            <td>${bytes(f.bytes)}</td><td>${when(f.created_at)}</td></tr>`)}
          </tbody></table>` : null}
      </section>
      ${current ? html`<${FileDetails} key=${current.id} file=${current}
        onDeleted=${() => { select(null); files.reload(); }} />` : null}
    </div>
  <//>`;
}
