// The sweep's scatter plot (hand-written SVG): x = CLIP-T (prompt adherence), y = CLIP-I (likeness), one
// point per weight, joined in weight order; and the same numbers as a table.
import { html } from "../lib/ui.js";

const W = 480;
const H = 320;
const M = { left: 74, right: 24, top: 16, bottom: 46 };

export function fmt(v, digits = 4) {
  return v == null ? "–" : Number(v).toFixed(digits);
}

// [lo, hi] around the values with a little room; never an empty range
function range(values) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (hi - lo < 1e-6) {
    lo -= 0.01;
    hi += 0.01;
  }
  const pad = (hi - lo) * 0.12;
  return [lo - pad, hi + pad];
}

function ticks([lo, hi], n = 4) {
  return Array.from({ length: n + 1 }, (_, i) => lo + ((hi - lo) * i) / n);
}

export function SweepPlot({ points }) {
  const scored = points.filter((p) => p.clip_t != null && p.clip_i != null);
  if (!scored.length) return null;
  const xr = range(scored.map((p) => p.clip_t));
  const yr = range(scored.map((p) => p.clip_i));
  const x = (v) => M.left + ((v - xr[0]) / (xr[1] - xr[0])) * (W - M.left - M.right);
  const y = (v) => H - M.bottom - ((v - yr[0]) / (yr[1] - yr[0])) * (H - M.top - M.bottom);
  const ordered = [...scored].sort((a, b) => a.weight - b.weight);
  const line = ordered.map((p) => `${x(p.clip_t).toFixed(1)},${y(p.clip_i).toFixed(1)}`).join(" ");
  const digits = Math.max(2, Math.min(4, Math.ceil(-Math.log10(xr[1] - xr[0])) + 1));
  const ydigits = Math.max(2, Math.min(4, Math.ceil(-Math.log10(yr[1] - yr[0])) + 1));
  return html`<figure class="sweep-plot">
    <svg viewBox=${`0 0 ${W} ${H}`} role="img" aria-labelledby="sweep-plot-title sweep-plot-desc" class="plot">
      <title id="sweep-plot-title">Likeness (CLIP-I) against prompt adherence (CLIP-T) by avatar weight</title>
      <desc id="sweep-plot-desc">${ordered
        .map((p) => `weight ${p.weight}: CLIP-T ${fmt(p.clip_t)}, CLIP-I ${fmt(p.clip_i)}`)
        .join("; ")}</desc>
      <g class="grid-lines">
        ${ticks(xr).map((t) => html`<line x1=${x(t)} x2=${x(t)} y1=${M.top} y2=${H - M.bottom} />`)}
        ${ticks(yr).map((t) => html`<line x1=${M.left} x2=${W - M.right} y1=${y(t)} y2=${y(t)} />`)}
      </g>
      <line class="axis" x1=${M.left} x2=${W - M.right} y1=${H - M.bottom} y2=${H - M.bottom} />
      <line class="axis" x1=${M.left} x2=${M.left} y1=${M.top} y2=${H - M.bottom} />
      ${ticks(xr).map(
        (t) => html`<text x=${x(t)} y=${H - M.bottom + 15} text-anchor="middle">${t.toFixed(digits)}</text>`,
      )}
      ${ticks(yr).map(
        (t) => html`<text x=${M.left - 6} y=${y(t) + 4} text-anchor="end">${t.toFixed(ydigits)}</text>`,
      )}
      <text class="axis-label" x=${(M.left + W - M.right) / 2} y=${H - 8} text-anchor="middle">
        CLIP-T: prompt adherence →
      </text>
      <text class="axis-label" transform=${`translate(13 ${(M.top + H - M.bottom) / 2}) rotate(-90)`}
        text-anchor="middle">CLIP-I: likeness →</text>
      <polyline class="sweep-line" points=${line} />
      ${ordered.map(
        (p) => html`<g class="sweep-point">
          <circle class="point" cx=${x(p.clip_t)} cy=${y(p.clip_i)} r="5" data-weight=${p.weight}
            data-clip-t=${p.clip_t} data-clip-i=${p.clip_i}>
            <title>weight ${p.weight}: CLIP-T ${fmt(p.clip_t)}, CLIP-I ${fmt(p.clip_i)}</title>
          </circle>
          <text x=${x(p.clip_t) > W - 70 ? x(p.clip_t) - 8 : x(p.clip_t) + 8} y=${y(p.clip_i) - 8}
            text-anchor=${x(p.clip_t) > W - 70 ? "end" : "start"}>w ${p.weight}</text>
        </g>`,
      )}
    </svg>
  </figure>`;
}

export function SweepTable({ points, reference }) {
  if (!points.length) return null;
  return html`<table class="sweep-table">
    <caption>Scores by weight (likeness against the ${reference || "avatar images"})</caption>
    <thead>
      <tr><th scope="col">Weight</th><th scope="col">CLIP-T (prompt)</th><th scope="col">CLIP-I (likeness)</th></tr>
    </thead>
    <tbody>
      ${[...points]
        .sort((a, b) => a.weight - b.weight)
        .map(
          (p) => html`<tr data-weight=${p.weight}>
            <th scope="row">${p.weight}</th>
            <td class="clip-t">${fmt(p.clip_t)}</td>
            <td class="clip-i">${fmt(p.clip_i)}</td>
          </tr>`,
        )}
    </tbody>
  </table>`;
}
