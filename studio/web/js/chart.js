// A line chart written as SVG (no library): loss against step, several series, exportable as CSV
// and PNG. Colours and fonts are attributes, not CSS, so the exported PNG looks like the page.
import { useRef } from '../vendor/hooks.mjs';
import { html } from './html.js';
import { download, number } from './format.js';

const WIDTH = 720;
const HEIGHT = 300;
const MARGIN = { top: 16, right: 16, bottom: 40, left: 60 };
const MAX_DRAWN = 1500;
const FONT = 'system-ui, sans-serif';
export const PALETTE = ['#1d4ed8', '#c2410c', '#15803d', '#7e22ce', '#be123c', '#0e7490', '#a16207', '#4b5563'];

/** Return about `count` round tick values covering [low, high]. */
function ticks(low, high, count = 5) {
  if (!(high > low)) return [low];
  const raw = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
  const values = [];
  for (let v = Math.ceil(low / step) * step; v <= high + step * 1e-9; v += step) values.push(Number(v.toPrecision(12)));
  return values;
}

/** Keep at most MAX_DRAWN points for drawing (every k-th plus the last); the CSV keeps them all. */
function thin(points) {
  if (points.length <= MAX_DRAWN) return points;
  const every = Math.ceil(points.length / MAX_DRAWN);
  const kept = points.filter((_, i) => i % every === 0);
  if (kept[kept.length - 1] !== points[points.length - 1]) kept.push(points[points.length - 1]);
  return kept;
}

function bounds(series) {
  let xMin = Infinity; let xMax = -Infinity; let yMin = Infinity; let yMax = -Infinity;
  for (const line of series) {
    for (const [x, y] of line.points) {
      xMin = Math.min(xMin, x); xMax = Math.max(xMax, x);
      yMin = Math.min(yMin, y); yMax = Math.max(yMax, y);
    }
  }
  if (xMin === Infinity) return null;
  if (xMax === xMin) { xMin -= 1; xMax += 1; }
  if (yMax === yMin) { yMin -= 0.5; yMax += 0.5; }
  const pad = (yMax - yMin) * 0.05;
  return { xMin, xMax, yMin: yMin - pad, yMax: yMax + pad };
}

export function toCsv(series, xName = 'step') {
  const lines = ['series,step,value'];
  for (const line of series) {
    const name = `"${line.name.replace(/"/g, '""')}"`;
    for (const [x, y] of line.points) lines.push(`${name},${x},${y}`);
  }
  return `${lines.join('\n')}\n`;
}

async function toPng(svg) {
  const text = new XMLSerializer().serializeToString(svg);
  const url = URL.createObjectURL(new Blob([text], { type: 'image/svg+xml' }));
  try {
    const image = new Image();
    image.width = WIDTH;
    image.height = HEIGHT;
    await new Promise((resolve, reject) => { image.onload = resolve; image.onerror = reject; image.src = url; });
    const canvas = document.createElement('canvas');
    canvas.width = WIDTH * 2;
    canvas.height = HEIGHT * 2;
    const context = canvas.getContext('2d');
    context.fillStyle = '#ffffff';
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.drawImage(image, 0, 0, canvas.width, canvas.height);
    return await new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
  } finally {
    URL.revokeObjectURL(url);
  }
}

/** Describe the chart in words for screen readers (and tests): points and the latest value per series. */
function summary(series, xLabel) {
  return series.map((line) => {
    const last = line.points[line.points.length - 1];
    return last
      ? `${line.name}: ${line.points.length} points, latest ${number(last[1])} at ${xLabel} ${number(last[0], 2)}`
      : `${line.name}: no points yet`;
  }).join('; ');
}

/**
 * `series`: [{name, points: [[step, value], ...], color?, dashed?}]. `label` is the accessible name
 * (it contains "loss" for loss charts); `filename` names the exports.
 */
export function LineChart({ label, series, filename = 'loss', yLabel = 'loss', xLabel = 'step', xIntegers = true }) {
  const svg = useRef(null);
  const coloured = series.map((line, i) => ({ ...line, color: line.color || PALETTE[i % PALETTE.length] }));
  const box = bounds(coloured);
  const total = coloured.reduce((sum, line) => sum + line.points.length, 0);
  const innerW = WIDTH - MARGIN.left - MARGIN.right;
  const innerH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const sx = (x) => MARGIN.left + ((x - box.xMin) / (box.xMax - box.xMin)) * innerW;
  const sy = (y) => MARGIN.top + (1 - (y - box.yMin) / (box.yMax - box.yMin)) * innerH;
  const grid = '#e5e7eb';
  const ink = '#374151';

  const body = box === null
    ? html`<text x=${WIDTH / 2} y=${HEIGHT / 2} text-anchor="middle" fill="#6b7280" font-family=${FONT}
        font-size="14">No loss points yet</text>`
    : html`
      ${ticks(box.yMin, box.yMax).map((t) => html`<g>
        <line x1=${MARGIN.left} x2=${WIDTH - MARGIN.right} y1=${sy(t)} y2=${sy(t)} stroke=${grid} />
        <text x=${MARGIN.left - 6} y=${sy(t) + 4} text-anchor="end" font-size="11" fill=${ink}
          font-family=${FONT}>${number(t, 3)}</text></g>`)}
      ${ticks(box.xMin, box.xMax, 6).filter((t) => !xIntegers || Number.isInteger(t)).map((t) => html`<g>
        <line x1=${sx(t)} x2=${sx(t)} y1=${HEIGHT - MARGIN.bottom} y2=${HEIGHT - MARGIN.bottom + 4} stroke=${ink} />
        <text x=${sx(t)} y=${HEIGHT - MARGIN.bottom + 16} text-anchor="middle" font-size="11" fill=${ink}
          font-family=${FONT}>${number(t, 2)}</text></g>`)}
      <line x1=${MARGIN.left} x2=${WIDTH - MARGIN.right} y1=${HEIGHT - MARGIN.bottom} y2=${HEIGHT - MARGIN.bottom}
        stroke=${ink} />
      <line x1=${MARGIN.left} x2=${MARGIN.left} y1=${MARGIN.top} y2=${HEIGHT - MARGIN.bottom} stroke=${ink} />
      <text x=${MARGIN.left + innerW / 2} y=${HEIGHT - 6} text-anchor="middle" font-size="12" fill=${ink}
        font-family=${FONT}>${xLabel}</text>
      <text transform=${`translate(14 ${MARGIN.top + innerH / 2}) rotate(-90)`} text-anchor="middle"
        font-size="12" fill=${ink} font-family=${FONT}>${yLabel}</text>
      ${coloured.map((line) => {
        const drawn = thin(line.points);
        const d = drawn.map(([x, y], i) => `${i ? 'L' : 'M'}${sx(x).toFixed(1)} ${sy(y).toFixed(1)}`).join('');
        return html`<g class="series" data-series=${line.name} data-points=${line.points.length}>
          <path d=${d} fill="none" stroke=${line.color} stroke-width="2"
            stroke-dasharray=${line.dashed ? '6 4' : null} />
          ${drawn.length <= 60 ? drawn.map(([x, y]) => html`<circle cx=${sx(x)} cy=${sy(y)} r="2.5"
            fill=${line.color} />`) : null}
        </g>`;
      })}`;

  const exportCsv = () => download(new Blob([toCsv(coloured, xLabel)], { type: 'text/csv' }), `${filename}.csv`);
  const exportPng = async () => download(await toPng(svg.current), `${filename}.png`);
  return html`<figure class="chart">
    <svg ref=${svg} xmlns="http://www.w3.org/2000/svg" viewBox=${`0 0 ${WIDTH} ${HEIGHT}`} width=${WIDTH}
      height=${HEIGHT} role="img" aria-label=${label} data-points=${total}>
      <rect width=${WIDTH} height=${HEIGHT} fill="#ffffff" />
      ${body}
    </svg>
    <figcaption>
      <ul class="legend">
        ${coloured.filter((line) => line.points.length || !total).map((line) => html`<li>
          <svg width="28" height="10" aria-hidden="true"><line x1="0" x2="28" y1="5" y2="5" stroke=${line.color}
            stroke-width="3" stroke-dasharray=${line.dashed ? '6 4' : null} /></svg>
          ${line.name}</li>`)}
      </ul>
      <p class="visually-hidden">${summary(coloured, xLabel)}</p>
      <div class="chart-actions">
        <button type="button" onClick=${exportCsv} disabled=${!total}>Export CSV</button>
        <button type="button" onClick=${exportPng} disabled=${!total}>Export PNG</button>
      </div>
    </figcaption>
  </figure>`;
}
