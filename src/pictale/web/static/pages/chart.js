// A small hand-written SVG line chart (loss per step, likeness per checkpoint): axes with their ranges, one
// polyline per series, an optional marked x (the chosen step). role=img with a text summary for screen readers.
import { html } from "../lib/ui.js";

const W = 480;
const H = 200;
const PAD = { left: 48, right: 12, top: 12, bottom: 30 };

function fmt(v) {
  if (!Number.isFinite(v)) return "";
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
}

// series: [{name, cls, points: [[x, y], ...]}]; mark: an x to draw a vertical line at (with markLabel)
export function LineChart({ id, title, series, xLabel, yLabel, mark, markLabel }) {
  const all = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (!all.length) return null;
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (mark !== undefined && mark !== null) [x0, x1] = [Math.min(x0, mark), Math.max(x1, mark)];
  if (x1 === x0) [x0, x1] = [x0 - 1, x1 + 1];
  if (y1 === y0) [y0, y1] = [y0 - Math.abs(y0 || 1) * 0.05, y1 + Math.abs(y1 || 1) * 0.05];
  const iw = W - PAD.left - PAD.right;
  const ih = H - PAD.top - PAD.bottom;
  const sx = (x) => PAD.left + ((x - x0) / (x1 - x0)) * iw;
  const sy = (y) => PAD.top + (1 - (y - y0) / (y1 - y0)) * ih;
  const last = series.map((s) => `${s.name} ${fmt(s.points.length ? s.points[s.points.length - 1][1] : NaN)}`);
  const summary = `${title}: ${all.length} points, ${xLabel} ${fmt(x0)} to ${fmt(x1)}; latest ${last.join(", ")}`;
  return html`<figure class="chart" id=${id}>
    <svg viewBox=${`0 0 ${W} ${H}`} role="img" aria-label=${summary} preserveAspectRatio="xMidYMid meet">
      <title>${summary}</title>
      <line class="axis" x1=${PAD.left} y1=${PAD.top} x2=${PAD.left} y2=${PAD.top + ih} />
      <line class="axis" x1=${PAD.left} y1=${PAD.top + ih} x2=${PAD.left + iw} y2=${PAD.top + ih} />
      <text x=${PAD.left - 4} y=${PAD.top + 8} text-anchor="end">${fmt(y1)}</text>
      <text x=${PAD.left - 4} y=${PAD.top + ih} text-anchor="end">${fmt(y0)}</text>
      <text x=${PAD.left} y=${H - 14} text-anchor="middle">${fmt(x0)}</text>
      <text x=${PAD.left + iw} y=${H - 14} text-anchor="end">${fmt(x1)}</text>
      <text x=${PAD.left + iw / 2} y=${H - 2} text-anchor="middle">${xLabel}</text>
      <text x="10" y=${PAD.top + ih / 2} text-anchor="middle" transform=${`rotate(-90 10 ${PAD.top + ih / 2})`}>${yLabel}</text>
      ${mark !== undefined && mark !== null
        ? html`<line class="mark" x1=${sx(mark)} y1=${PAD.top} x2=${sx(mark)} y2=${PAD.top + ih} />
            <text x=${Math.min(sx(mark) + 4, W - 60)} y=${PAD.top + 12}>${markLabel || ""}</text>`
        : null}
      ${series.map(
        (s) => html`<g class=${`series ${s.cls || ""}`}>
          <polyline fill="none" points=${s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ")} />
          ${s.points.length <= 40 ? s.points.map(([x, y]) => html`<circle class="point" cx=${sx(x)} cy=${sy(y)} r="3" />`) : null}
        </g>`,
      )}
    </svg>
    <figcaption>
      <span>${title}</span>
      ${series.length > 1
        ? html`<span class="legend">${series.map((s) => html`<span class=${`key ${s.cls || ""}`}>${s.name}</span>`)}</span>`
        : null}
    </figcaption>
  </figure>`;
}
