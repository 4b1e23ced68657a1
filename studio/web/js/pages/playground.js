// Playground: one prompt to two models at once (base and fine-tune, or two fine-tunes), streamed side
// by side through `/v1/chat/completions`, with time to first token and tokens/s for each.
import { useRef, useState } from '../../vendor/hooks.mjs';
import { api, readEvents } from '../api.js';
import { number } from '../format.js';
import { html } from '../html.js';
import { ErrorMessage, Field, Page, Status, useResource } from '../ui.js';

const IDLE = { text: '', state: 'idle', error: null, ttft: null, tokens: 0, seconds: null, finish: null };

/** Stream one chat completion into `update`; counts tokens from `usage` when sent, else content chunks. */
async function streamAnswer({ model, messages, sampling, signal, update }) {
  const started = performance.now();
  let text = '';
  let chunks = 0;
  let usage = null;
  let first = null;
  let finish = null;
  // Tokens/s counts from the first token on, so the wait for the first one is not in it twice.
  const figures = (state) => {
    const now = performance.now();
    const tokens = usage ? usage.completion_tokens : chunks;
    const generating = first === null ? null : (now - first) / 1000;
    return {
      text,
      state,
      error: null,
      ttft: first === null ? null : (first - started) / 1000,
      tokens,
      seconds: (now - started) / 1000,
      rate: generating && tokens > 1 ? (tokens - 1) / generating : null,
      finish,
    };
  };
  update({ ...IDLE, state: 'waiting' });
  try {
    const body = { model, messages, stream: true, stream_options: { include_usage: true }, ...sampling };
    for await (const chunk of readEvents('POST', '/v1/chat/completions', { body, signal })) {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        const piece = (choice.delta && choice.delta.content) || '';
        if (choice.finish_reason) finish = choice.finish_reason;
        if (piece || choice.delta) {
          if (first === null) first = performance.now();
          if (piece) { text += piece; chunks += 1; }
        }
      }
      update(figures('streaming'));
    }
    update(figures('done'));
  } catch (error) {
    if (error.name === 'AbortError') { update((old) => ({ ...old, state: 'stopped' })); return; }
    update((old) => ({ ...old, state: 'error', error }));
  }
}

function Answer({ model, answer }) {
  return html`<section class="answer card" role="region" aria-label=${model || 'no model'} aria-busy=${answer.state === 'streaming' || answer.state === 'waiting' ? 'true' : 'false'}
    data-state=${answer.state}>
    <h2 class="model-name"><code>${model || '—'}</code></h2>
    <div class="answer-text" aria-live="polite">${answer.text || (answer.state === 'done' ? html`<em class="muted">(an empty answer)</em>` : '')}</div>
    <${ErrorMessage} error=${answer.error} />
    <p class="metrics small">
      <span>${answer.state === 'waiting' ? 'waiting for the model…' : answer.state}</span>
      <span>time to first token: ${answer.ttft === null ? '—' : `${number(answer.ttft * 1000, 0)} ms`}</span>
      <span>tokens: ${answer.tokens}</span>
      <span>tokens/s: ${answer.rate ? number(answer.rate, 1) : '—'}</span>
      <span>finish: ${answer.finish || '—'}</span>
    </p>
  </section>`;
}

function ModelSelect({ id, label, value, models, onChange }) {
  return html`<${Field} label=${label} id=${id}>
    <select id=${id} value=${value} onChange=${(e) => onChange(e.currentTarget.value)}>
      <option value="">Choose a model</option>
      ${models.map((m) => html`<option value=${m.id}>${m.id}${m.deployment ? ` — ${m.deployment.status}` : ' — not deployed'}</option>`)}
    </select>
  <//>`;
}

export function PlaygroundPage({ query }) {
  const models = useResource((signal) => api.get('/v1/models', { signal }), []);
  const [a, setA] = useState(query.get('a') || '');
  const [b, setB] = useState(query.get('b') || '');
  const [system, setSystem] = useState('');
  const [prompt, setPrompt] = useState('');
  const [sampling, setSampling] = useState({ temperature: '0.7', top_p: '1', max_tokens: '64', seed: '' });
  const [answers, setAnswers] = useState([IDLE, IDLE]);
  const controller = useRef(null);
  const list = models.data ? models.data.data : [];
  const running = answers.some((x) => x.state === 'waiting' || x.state === 'streaming');
  const setSample = (name) => (e) => { const { value } = e.currentTarget; setSampling((old) => ({ ...old, [name]: value })); };
  const updater = (index) => (next) => setAnswers((old) => {
    const copy = [...old];
    copy[index] = typeof next === 'function' ? next(old[index]) : next;
    return copy;
  });
  const send = (event) => {
    event.preventDefault();
    controller.current = new AbortController();
    const messages = [];
    if (system.trim()) messages.push({ role: 'system', content: system });
    messages.push({ role: 'user', content: prompt });
    const options = {
      temperature: Number(sampling.temperature),
      top_p: Number(sampling.top_p),
      max_tokens: Number(sampling.max_tokens),
    };
    if (sampling.seed.trim()) options.seed = Number(sampling.seed);
    [a, b].forEach((model, index) => streamAnswer({
      model, messages, sampling: options, signal: controller.current.signal, update: updater(index),
    }));
  };
  return html`<${Page} title="Playground">
    <${ErrorMessage} error=${models.error} />
    <form class="card playground" onSubmit=${send} aria-label="Ask both models">
      <div class="grid">
        <${ModelSelect} id="model-a" label="Model A" value=${a} models=${list} onChange=${setA} />
        <${ModelSelect} id="model-b" label="Model B" value=${b} models=${list} onChange=${setB} />
      </div>
      <${Field} label="System message (optional)" id="system">
        <textarea id="system" rows="2" value=${system} onInput=${(e) => setSystem(e.currentTarget.value)}></textarea>
      <//>
      <${Field} label="Prompt" id="prompt">
        <textarea id="prompt" rows="3" required value=${prompt} onInput=${(e) => setPrompt(e.currentTarget.value)}></textarea>
      <//>
      <fieldset>
        <legend>Sampling</legend>
        <div class="grid">
          <${Field} label="Temperature" id="temperature"><input id="temperature" type="number" min="0" max="2" step="0.1"
            value=${sampling.temperature} onInput=${setSample('temperature')} /><//>
          <${Field} label="Top p" id="top_p"><input id="top_p" type="number" min="0" max="1" step="0.05"
            value=${sampling.top_p} onInput=${setSample('top_p')} /><//>
          <${Field} label="Max tokens" id="max_tokens"><input id="max_tokens" type="number" min="1"
            value=${sampling.max_tokens} onInput=${setSample('max_tokens')} /><//>
          <${Field} label="Seed" id="seed"><input id="seed" type="number" min="0" value=${sampling.seed}
            onInput=${setSample('seed')} /><//>
        </div>
      </fieldset>
      <div class="actions">
        <button type="submit" class="primary" disabled=${running || !a || !b || !prompt.trim()}>Send to both</button>
        ${running ? html`<button type="button" onClick=${() => controller.current.abort()}>Stop</button>` : null}
      </div>
    </form>
    <div class="answers">
      <${Answer} model=${a} answer=${answers[0]} />
      <${Answer} model=${b} answer=${answers[1]} />
    </div>
    <p class="muted small">Models must be deployed first (<a href="#/deployments">Deployments</a>). Status: ${list.filter((m) => m.deployment).map((m) => html`<span><code>${m.id}</code> <${Status} value=${m.deployment.status} /> </span>`)}</p>
  <//>`;
}
