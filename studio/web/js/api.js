// The public API, called with the key the user signed in with (kept in this tab's sessionStorage).
// Every failure becomes an ApiError whose message is the API's own `error.message`.

const KEY = 'mini-studio.key';
const ROLE = 'mini-studio.role';
const NAME = 'mini-studio.name';

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  get role() { return sessionStorage.getItem(ROLE); },
  get name() { return sessionStorage.getItem(NAME); },
  save(key, role, name) {
    sessionStorage.setItem(KEY, key);
    sessionStorage.setItem(ROLE, role);
    sessionStorage.setItem(NAME, name);
  },
  clear() {
    for (const item of [KEY, ROLE, NAME]) sessionStorage.removeItem(item);
  },
};

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message);
    this.name = 'ApiError';
    this.status = status;
    this.type = error.type || null;
    this.param = error.param || null;
    this.code = error.code || null;
  }
}

function networkError(cause) {
  return new ApiError(0, { message: `Mini Studio cannot be reached (${cause}).`, type: 'network_error' });
}

/** Return the ApiError of a parsed error body (OpenAI's shape) or of a bare HTTP status. */
export function errorOf(status, body, statusText = '') {
  const error = body && typeof body === 'object' ? body.error : null;
  if (error && typeof error.message === 'string') return new ApiError(status, error);
  return new ApiError(status, { message: `HTTP ${status} ${statusText}`.trim(), type: 'http_error' });
}

async function errorOfResponse(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: the status says it */ }
  return errorOf(response.status, body, response.statusText);
}

/** Encode a model id or other id for a path, keeping its `/` and `:` (routes take `{model:path}`). */
export function pathPart(value) {
  return encodeURI(value).replace(/[?#]/g, encodeURIComponent);
}

function withQuery(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

function headersFor(key, extra = {}) {
  const headers = { Accept: 'application/json', ...extra };
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

/** Send a JSON request (or none) and return the response when it is ok. Throws ApiError. */
async function send(method, path, { body, signal, key, accept }) {
  const extra = body === undefined ? {} : { 'Content-Type': 'application/json' };
  if (accept) extra.Accept = accept;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headersFor(key, extra),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw networkError(error.message);
  }
  if (!response.ok) throw await errorOfResponse(response);
  return response;
}

/** Call the API and return its JSON (null for 204). Throws ApiError. */
export async function request(method, path, { body, query, signal, key = session.key } = {}) {
  const response = await send(method, withQuery(path, query), { body, signal, key });
  if (response.status === 204) return null;
  const type = response.headers.get('content-type') || '';
  return type.includes('json') ? response.json() : response.text();
}

export const api = {
  get: (path, options) => request('GET', path, options),
  post: (path, body, options) => request('POST', path, { ...options, body }),
  patch: (path, body, options) => request('PATCH', path, { ...options, body }),
  delete: (path, options) => request('DELETE', path, options),
};

/**
 * Read a Server-Sent Events response: yields each `data:` payload parsed as JSON, ends at `[DONE]`
 * or when the server closes. Comments (keep-alives) are skipped. Throws ApiError before the stream
 * starts (the HTTP error) and for an error event inside it (OpenAI's `{"error": ...}`).
 */
export async function* readEvents(method, path, { body, signal } = {}) {
  const response = await send(method, path, { body, signal, key: session.key, accept: 'text/event-stream' });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split('\n').filter((line) => line.startsWith('data:'))
          .map((line) => line.slice(5).replace(/^ /, '')).join('\n');
        if (!data) continue;
        if (data === '[DONE]') return;
        const parsed = JSON.parse(data);
        if (parsed && parsed.error) throw errorOf(200, parsed);
        yield parsed;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * POST a multipart form with upload progress (fetch has none): `onProgress(sentBytes, totalBytes)`.
 * Returns the JSON answer; throws ApiError (status 0 when the connection dropped).
 */
export function sendForm(path, form, { onProgress, signal } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    for (const [name, value] of Object.entries(headersFor(session.key))) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => onProgress && onProgress(event.loaded, event.total);
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(errorOf(xhr.status, body, xhr.statusText));
    };
    xhr.onerror = () => reject(networkError('the connection dropped'));
    xhr.onabort = () => reject(new DOMException('aborted', 'AbortError'));
    if (signal) signal.addEventListener('abort', () => xhr.abort(), { once: true });
    xhr.send(form);
  });
}

/** Return every page of an OpenAI-shaped list (`{data, has_more}`, paged by `after` = last id). */
export async function listAll(path, { limit = 100, max = 2000, query = {}, signal } = {}) {
  const rows = [];
  let after;
  for (;;) {
    const page = await api.get(path, { query: { ...query, limit, after }, signal });
    rows.push(...page.data);
    if (!page.has_more || !page.data.length || rows.length >= max) return rows;
    after = page.data[page.data.length - 1].id;
  }
}
