// Small shared pieces: data loading hooks, error and status display, form fields.
import { useCallback, useEffect, useRef, useState } from '../vendor/hooks.mjs';
import { html } from './html.js';

/** Load `load(signal)` when `deps` change; returns {data, error, loading, reload, setData}. */
export function useResource(load, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const [version, setVersion] = useState(0);
  useEffect(() => {
    const controller = new AbortController();
    setState((old) => ({ ...old, loading: true }));
    load(controller.signal).then(
      (data) => controller.signal.aborted || setState({ data, error: null, loading: false }),
      (error) => controller.signal.aborted || error.name === 'AbortError'
        || setState((old) => ({ data: old.data, error, loading: false })),
    );
    return () => controller.abort();
  }, [...deps, version]);
  const reload = useCallback(() => setVersion((v) => v + 1), []);
  const setData = useCallback((data) => setState((old) => ({ ...old, data })), []);
  return { ...state, reload, setData };
}

/** Call `tick` every `ms` while `active` (and once at once). */
export function useInterval(tick, ms, active = true) {
  const saved = useRef(tick);
  saved.current = tick;
  useEffect(() => {
    if (!active) return undefined;
    const id = setInterval(() => saved.current(), ms);
    return () => clearInterval(id);
  }, [ms, active]);
}

/** Run an action, keeping its error and busy state: `[run, busy, error, setError]`. */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = useCallback(async (action) => {
    setBusy(true);
    setError(null);
    try {
      return await action();
    } catch (caught) {
      setError(caught);
      return undefined;
    } finally {
      setBusy(false);
    }
  }, []);
  return [run, busy, error, setError];
}

export function ErrorMessage({ error, id }) {
  if (!error) return null;
  const param = error.param ? html` <span class="param">(${error.param})</span>` : null;
  return html`<p class="error" role="alert" id=${id}>${error.message}${param}</p>`;
}

export function Status({ value }) {
  return html`<span class="status status-${String(value).replace(/[^a-z_-]/gi, '')}">${value}</span>`;
}

export function Field({ label, id, hint, children }) {
  return html`<div class="field">
    <label for=${id}>${label}</label>
    ${children}
    ${hint ? html`<small id=${`${id}-hint`} class="hint">${hint}</small>` : null}
  </div>`;
}

export function Loading({ what = 'Loading' }) {
  return html`<p class="muted" role="status">${what}…</p>`;
}

/** A definition list of [term, value] pairs. */
export function Facts({ items, label }) {
  return html`<dl class="facts" aria-label=${label}>
    ${items.filter(Boolean).map(([term, value]) => html`<div><dt>${term}</dt><dd>${value}</dd></div>`)}
  </dl>`;
}

export function Page({ title, children, actions }) {
  const heading = useRef(null);
  useEffect(() => { if (heading.current) heading.current.focus({ preventScroll: true }); }, [title]);
  return html`<section class="page" aria-labelledby="page-title">
    <header class="page-header">
      <h1 id="page-title" tabindex="-1" ref=${heading}>${title}</h1>
      ${actions ? html`<div class="actions">${actions}</div>` : null}
    </header>
    ${children}
  </section>`;
}
