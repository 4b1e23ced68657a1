// Uploading a dataset: small files in one request to /v1/files, big ones through OpenAI's Uploads API
// in parts. A dropped connection is retried with backoff; if it stays down, the upload's id and the
// parts already sent are kept in this tab, and dropping the same file again carries on from there.
import { api, ApiError, pathPart, sendForm } from './api.js';

export const DIRECT_LIMIT = 32 * 1024 * 1024;
export const PART_BYTES = 16 * 1024 * 1024;
const RETRIES = 5;
const RESUME_PREFIX = 'mini-studio.upload:';

/** The size limits, which a page may shrink (`window.MINI_STUDIO_UPLOAD_SIZES`, for tests). */
function sizes() {
  const override = globalThis.MINI_STUDIO_UPLOAD_SIZES || {};
  return { direct: override.direct ?? DIRECT_LIMIT, part: override.part ?? PART_BYTES };
}

function resumeKey(file) {
  return `${RESUME_PREFIX}${file.name}:${file.size}:${file.lastModified}`;
}

function loadResume(file, partBytes) {
  try {
    const saved = JSON.parse(sessionStorage.getItem(resumeKey(file)));
    if (saved && saved.partBytes === partBytes && saved.expiresAt * 1000 > Date.now()) return saved;
  } catch { /* nothing usable saved */ }
  return null;
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

async function withRetries(send, onRetry) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await send();
    } catch (error) {
      // Only a dropped connection or a 5xx is worth another try; a 4xx will not change.
      const transient = error instanceof ApiError && (error.status === 0 || error.status >= 500);
      if (!transient || attempt >= RETRIES) throw error;
      onRetry(attempt + 1, error);
      await sleep(1000 * 2 ** attempt);
    }
  }
}

/**
 * Upload `file`; `onProgress({sent, total, note})` as bytes go out. `model` (optional) names the base
 * model whose tokenizer counts the tokens. Returns the file object (`/v1/files` shape).
 */
export async function uploadDataset(file, { model, onProgress, signal }) {
  const total = file.size;
  const { direct, part: partBytes } = sizes();
  const report = (sent, note = '') => onProgress({ sent, total, note });
  if (total <= direct) {
    const form = new FormData();
    form.append('purpose', 'fine-tune');
    if (model) form.append('model', model);
    form.append('file', file, file.name);
    return withRetries(
      () => sendForm('/v1/files', form, { signal, onProgress: (sent) => report(Math.min(sent, total)) }),
      (attempt, error) => report(0, `${error.message} Retrying (${attempt}/${RETRIES})…`),
    );
  }
  let saved = loadResume(file, partBytes);
  if (saved === null) {
    const upload = await api.post('/v1/uploads', {
      filename: file.name, purpose: 'fine-tune', bytes: total, mime_type: 'application/jsonl',
    }, { signal });
    saved = { uploadId: upload.id, partIds: [], partBytes, expiresAt: upload.expires_at };
  }
  const key = resumeKey(file);
  sessionStorage.setItem(key, JSON.stringify(saved));
  const parts = Math.ceil(total / partBytes);
  for (let index = saved.partIds.length; index < parts; index += 1) {
    const start = index * partBytes;
    const blob = file.slice(start, Math.min(start + partBytes, total));
    const form = new FormData();
    form.append('data', blob, `${file.name}.part${index}`);
    const path = `/v1/uploads/${pathPart(saved.uploadId)}/parts`;
    const note = `part ${index + 1} of ${parts}`;
    let part;
    try {
      part = await withRetries(
        () => sendForm(path, form, { signal, onProgress: (sent) => report(start + Math.min(sent, blob.size), note) }),
        (attempt, error) => report(start, `${error.message} Retrying ${note} (${attempt}/${RETRIES})…`),
      );
    } catch (error) {
      if (error instanceof ApiError && (error.status === 404 || error.status === 409)) sessionStorage.removeItem(key);
      else if (error instanceof ApiError) {
        error.message = `${error.message} The parts sent so far are kept: drop the same file again to resume.`;
      }
      throw error;
    }
    saved.partIds.push(part.id);
    sessionStorage.setItem(key, JSON.stringify(saved));
  }
  report(total, 'assembling and validating');
  const done = await api.post(`/v1/uploads/${pathPart(saved.uploadId)}/complete`, { part_ids: saved.partIds }, { signal });
  sessionStorage.removeItem(key);
  return done.file;
}
