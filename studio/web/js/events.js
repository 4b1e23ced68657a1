// A job's events, live: the events stream (`?stream=true`, oldest first, ends with the job), turned
// into loss curves and the latest metrics. A dropped stream is opened again after a pause; it replays
// every event, so the state is rebuilt from scratch each time. When the stream ends, the stored list
// replaces what it delivered.
import { useEffect, useState } from '../vendor/hooks.mjs';
import { listAll, pathPart, readEvents } from './api.js';

const RETRY_MS = 2000;
const FLUSH_MS = 150;

/** Fold events (oldest first) into curves: a later attempt's point for a step replaces the earlier one. */
export function curvesOf(events) {
  const train = new Map();
  const valid = new Map();
  let latest = {};
  for (const event of events) {
    const data = event.data || {};
    if (event.type !== 'metrics' || typeof data.step !== 'number') continue;
    if (typeof data.train_loss === 'number') train.set(data.step, data.train_loss);
    if (typeof data.valid_loss === 'number') valid.set(data.step, data.valid_loss);
    latest = { ...latest, ...data };
  }
  const sorted = (map) => [...map.entries()].sort((a, b) => a[0] - b[0]);
  return { train: sorted(train), valid: sorted(valid), latest };
}

/**
 * Return all of a job's stored events, oldest first, from the paged list. Read once a job has ended:
 * it is the complete record even if the live stream missed an event written out of order.
 */
export async function storedEvents(jobId, signal) {
  const newestFirst = await listAll(`/v1/fine_tuning/jobs/${pathPart(jobId)}/events`, {
    limit: 1000, max: 1_000_000, signal,
  });
  return newestFirst.reverse();
}

/** Follow a job's events. Returns {events, ended, error}; `events` oldest first. */
export function useJobEvents(jobId) {
  const [state, setState] = useState({ events: [], ended: false, error: null });
  useEffect(() => {
    if (!jobId) return undefined;
    const controller = new AbortController();
    let timer = null;
    let pending = [];
    let received = [];
    const flush = () => {
      timer = null;
      received = received.concat(pending);
      pending = [];
      setState((old) => ({ ...old, events: received, error: null }));
    };
    const follow = async () => {
      while (!controller.signal.aborted) {
        received = [];
        pending = [];
        try {
          const path = `/v1/fine_tuning/jobs/${pathPart(jobId)}/events?stream=true`;
          for await (const event of readEvents('GET', path, { signal: controller.signal })) {
            pending.push(event);
            if (timer === null) timer = setTimeout(flush, FLUSH_MS);
          }
          clearTimeout(timer);
          flush();
          received = await storedEvents(jobId, controller.signal);
          setState({ events: received, ended: true, error: null });
          return;
        } catch (error) {
          if (controller.signal.aborted) return;
          clearTimeout(timer);
          timer = null;
          setState((old) => ({ ...old, error }));
          if (error.status >= 400 && error.status < 500) return;
          await new Promise((resolve) => { setTimeout(resolve, RETRY_MS); });
        }
      }
    };
    follow();
    return () => { controller.abort(); clearTimeout(timer); };
  }, [jobId]);
  return state;
}
