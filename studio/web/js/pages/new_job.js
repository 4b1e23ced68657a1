// New fine-tune: base model, files, method and hyperparameters (defaults shown), with the API's dry
// run (`/v1/fine_tuning/jobs/estimate`) updated as the form changes, before anything is spent.
import { useEffect, useState } from '../../vendor/hooks.mjs';
import { api } from '../api.js';
import { bytes, count, duration, params } from '../format.js';
import { html } from '../html.js';
import { ErrorMessage, Facts, Field, Page, useAction, useResource } from '../ui.js';

const DEFAULTS = {
  model: '',
  training_file: '',
  validation_file: '',
  method: 'lora',
  n_epochs: 'auto',
  batch_size: 'auto',
  learning_rate_multiplier: 'auto',
  lora_r: '16',
  lora_alpha: '32',
  lora_dropout: '0.05',
  lora_target_modules: 'q_proj, k_proj, v_proj, o_proj',
  suffix: '',
  seed: '',
};
const ESTIMATE_DELAY_MS = 400;

const autoOr = (text) => {
  const value = String(text).trim();
  return value === '' || value === 'auto' ? 'auto' : Number(value);
};

/** The create body (OpenAI's `method.supervised.hyperparameters` spelling plus Mini Studio's LoRA fields). */
export function jobBody(form) {
  const hyperparameters = {
    n_epochs: autoOr(form.n_epochs),
    batch_size: autoOr(form.batch_size),
    learning_rate_multiplier: autoOr(form.learning_rate_multiplier),
    fine_tuning_method: form.method,
  };
  if (form.method === 'lora') {
    Object.assign(hyperparameters, {
      lora_r: Number(form.lora_r),
      lora_alpha: Number(form.lora_alpha),
      lora_dropout: Number(form.lora_dropout),
      lora_target_modules: form.lora_target_modules.split(',').map((m) => m.trim()).filter(Boolean),
    });
  }
  const body = {
    model: form.model,
    training_file: form.training_file,
    method: { type: 'supervised', supervised: { hyperparameters } },
  };
  if (form.validation_file) body.validation_file = form.validation_file;
  if (form.suffix.trim()) body.suffix = form.suffix.trim();
  if (String(form.seed).trim()) body.seed = Number(form.seed);
  return body;
}

function Estimate({ form }) {
  const [state, setState] = useState({ data: null, error: null, busy: false });
  const ready = form.model && form.training_file;
  const key = JSON.stringify(jobBody(form));
  useEffect(() => {
    if (!ready) return undefined;
    const controller = new AbortController();
    setState((old) => ({ ...old, busy: true }));
    const timer = setTimeout(() => {
      api.post('/v1/fine_tuning/jobs/estimate', JSON.parse(key), { signal: controller.signal }).then(
        (data) => setState({ data, error: null, busy: false }),
        (error) => error.name === 'AbortError' || setState({ data: null, error, busy: false }),
      );
    }, ESTIMATE_DELAY_MS);
    return () => { clearTimeout(timer); controller.abort(); };
  }, [key, ready]);
  const e = state.data;
  return html`<aside class="card estimate" aria-labelledby="estimate-title" aria-busy=${state.busy ? 'true' : 'false'}>
    <h2 id="estimate-title">Estimate</h2>
    ${!ready ? html`<p class="muted">Choose a base model and a training file to see what the job needs.</p>` : null}
    <${ErrorMessage} error=${state.error} />
    ${ready && e ? html`
      <p class="verdict" role="status">
        ${e.fits ? (e.fits_now ? 'Fits, and can start now.' : 'Fits, but waits for free devices.')
          : `Does not fit: ${e.reason || 'too big for this cluster'}`}
      </p>
      <${Facts} label="Estimate" items=${[
        ['Epochs', e.hyperparameters.n_epochs],
        ['Batch size', e.hyperparameters.batch_size],
        ['Learning-rate multiplier', e.hyperparameters.learning_rate_multiplier],
        ['Dataset tokens', count(e.dataset_tokens)],
        ['Tokens to train', count(e.tokens_to_train)],
        ['Sequence length', count(e.sequence_length)],
        ['Trainable parameters', `${params(e.trainable_parameters)} of ${params(e.total_parameters)}`],
        ['Memory per worker', bytes(e.resources.memory_per_worker_bytes)],
        ['Workers', `${e.resources.workers} × ${e.resources.accelerator} (${e.resources.precision})`],
        ['Estimated time', duration(e.resources.estimated_wall_time_s)],
        ['Fits', e.fits ? 'yes' : 'no'],
        ['Fits now', e.fits_now ? 'yes' : 'no'],
      ]} />` : null}
  </aside>`;
}

export function NewJobPage({ query }) {
  const [form, setForm] = useState({ ...DEFAULTS, training_file: query.get('file') || '' });
  const models = useResource((signal) => api.get('/v1/fine_tuning/base_models', { signal }), []);
  const files = useResource((signal) => api.get('/v1/files', { query: { limit: 200 }, signal }), []);
  const [run, busy, error] = useAction();
  const ready = (files.data ? files.data.data : []).filter((f) => f.details.validation_status === 'ready');
  const baseModels = models.data ? models.data.data : [];
  useEffect(() => {
    if (!form.model && baseModels.length) setForm((old) => ({ ...old, model: baseModels[0].id }));
  }, [baseModels.length]);

  const set = (name) => (event) => {
    const { value } = event.currentTarget;
    setForm((old) => ({ ...old, [name]: value }));
  };
  const input = (name, label, hint, type = 'text') => html`<${Field} label=${label} id=${`job-${name}`} hint=${hint}>
    <input id=${`job-${name}`} type=${type} value=${form[name]} onInput=${set(name)}
      aria-describedby=${hint ? `job-${name}-hint` : null} disabled=${name.startsWith('lora_') && form.method !== 'lora'} />
  <//>`;
  const submit = (event) => {
    event.preventDefault();
    run(async () => {
      const job = await api.post('/v1/fine_tuning/jobs', jobBody(form));
      window.location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    });
  };
  const fileOptions = ready.map((f) => html`<option value=${f.id}>${f.filename} (${f.id})</option>`);
  return html`<${Page} title="New fine-tune">
    <${ErrorMessage} error=${models.error || files.error} />
    <div class="split">
      <form class="card job-form" onSubmit=${submit} aria-label="New fine-tuning job">
        <fieldset>
          <legend>Model and data</legend>
          <${Field} label="Base model" id="job-model">
            <select id="job-model" value=${form.model} onChange=${set('model')} required>
              ${baseModels.map((m) => html`<option value=${m.id}>${m.id} (${params(m.parameters)} parameters)</option>`)}
            </select>
          <//>
          <${Field} label="Training file" id="job-training_file"
            hint=${ready.length ? null : 'No validated file yet: upload one on the Datasets page.'}>
            <select id="job-training_file" value=${form.training_file} onChange=${set('training_file')} required>
              <option value="">Choose a file</option>${fileOptions}
            </select>
          <//>
          <${Field} label="Validation file (optional)" id="job-validation_file">
            <select id="job-validation_file" value=${form.validation_file} onChange=${set('validation_file')}>
              <option value="">None</option>${fileOptions}
            </select>
          <//>
        </fieldset>
        <fieldset>
          <legend>Method</legend>
          <div class="radios">
            <label><input type="radio" name="method" value="lora" checked=${form.method === 'lora'}
              onChange=${set('method')} /> LoRA (adapters; serves beside its base)</label>
            <label><input type="radio" name="method" value="full" checked=${form.method === 'full'}
              onChange=${set('method')} /> Full fine-tune</label>
          </div>
          <p class="hint">Preference (DPO) training is not available yet.</p>
        </fieldset>
        <fieldset>
          <legend>Hyperparameters</legend>
          <div class="grid">
            ${input('n_epochs', 'Epochs', '"auto" or 1-100')}
            ${input('batch_size', 'Batch size', '"auto" or 1-4096')}
            ${input('learning_rate_multiplier', 'Learning-rate multiplier', '"auto" or a number up to 100')}
            ${input('lora_r', 'LoRA rank', 'default 16', 'number')}
            ${input('lora_alpha', 'LoRA alpha', 'default 32', 'number')}
            ${input('lora_dropout', 'LoRA dropout', 'default 0.05')}
            ${input('lora_target_modules', 'LoRA target modules', 'comma-separated')}
            ${input('suffix', 'Suffix (optional)', 'part of the fine-tuned model name')}
            ${input('seed', 'Seed (optional)', 'empty: random', 'number')}
          </div>
        </fieldset>
        <button type="submit" class="primary" disabled=${busy || !form.model || !form.training_file}>
          ${busy ? 'Creating…' : 'Create fine-tuning job'}</button>
        <${ErrorMessage} error=${error} />
      </form>
      <${Estimate} form=${form} />
    </div>
  <//>`;
}
