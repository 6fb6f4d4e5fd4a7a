// The weight sweep of one avatar: the same prompt and seed at several weights, each image scored with CLIP,
// so the user sees where the avatar's identity starts to override the prompt.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, follow } from "../lib/api.js";
import { PromptBox } from "../lib/prompt.js";
import { ApiImage, ErrorBox, Field, fieldErrors, html } from "../lib/ui.js";
import { SweepPlot, SweepTable } from "./sweep_plot.js";

const FIELDS = ["prompt", "negative_prompt", "seed", "weights", "steps", "width", "height", "cfg_scale"];
const DEFAULTS = {
  prompt: "",
  negative_prompt: "",
  seed: -1,
  weights: "0, 0.25, 0.5, 0.75, 1",
  steps: "20",
  width: "",
  height: "",
  cfg_scale: "",
};

function parseWeights(text) {
  const parts = text.split(/[\s,;]+/).filter(Boolean);
  const values = parts.map(Number);
  if (values.some((v) => !Number.isFinite(v))) return null;
  return values;
}

export default function Sweep({ avatar }) {
  const [form, setForm] = useState(DEFAULTS);
  const [job, setJob] = useState(null); // {id, state, step, total, done, count}
  const [points, setPoints] = useState([]);
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  const abort = useRef(null);
  const formRef = useRef(null);
  const heading = useRef(null);
  useEffect(() => {
    heading.current?.focus();
    return () => abort.current?.abort();
  }, []);
  const set = (k) => (e) => setForm((f) => ({ ...f, [k]: e.target.value }));
  const running = job && (job.state === "queued" || job.state === "running");

  const submit = async (e) => {
    e?.preventDefault();
    setError(null);
    const weights = parseWeights(form.weights);
    if (!weights) {
      setError({ param: "weights", message: "weights: numbers separated by commas, e.g. 0, 0.5, 1" });
      return;
    }
    const body = { prompt: form.prompt, negative_prompt: form.negative_prompt, seed: Number(form.seed), weights };
    for (const k of ["steps", "width", "height", "cfg_scale"]) if (form[k] !== "") body[k] = Number(form[k]);
    abort.current?.abort();
    const ctl = new AbortController();
    abort.current = ctl;
    setPoints([]);
    setResult(null);
    try {
      const path = `/v1/avatars/${avatar.kind}/${encodeURIComponent(avatar.name)}/sweep`;
      const accepted = await api(path, { json: body, signal: ctl.signal });
      setJob({ id: accepted.id, state: "queued", step: 0, total: 0, count: weights.length });
      await follow(
        `/v1/jobs/${accepted.id}/events`,
        ({ event, data }) => {
          if (event === "step") {
            setJob((j) => ({ ...j, state: "running", step: data.step ?? j.step, total: data.total ?? j.total }));
          } else if (event === "started") {
            setJob((j) => ({ ...j, state: "running" }));
          } else if (event === "point") {
            setPoints((ps) => [...ps.filter((p) => p.index !== data.index), data]);
          } else if (event === "done") {
            setJob((j) => ({ ...j, state: "done", step: j.total || j.step }));
            if (data.result) {
              setResult(data.result);
              setPoints(data.result.points.map((p, index) => ({ ...p, index })));
            }
          } else if (event === "failed") {
            setJob((j) => ({ ...j, state: "failed" }));
            setError(data.error || { message: "The sweep failed." });
          } else if (event === "cancelled") {
            setJob((j) => ({ ...j, state: "cancelled" }));
          }
        },
        { signal: ctl.signal },
      );
    } catch (err) {
      if (err.name !== "AbortError") setError(err);
    }
  };
  const cancel = () => api(`/v1/jobs/${job.id}`, { method: "DELETE" }).catch(setError);

  const errs = fieldErrors(error, FIELDS);
  const count = job ? job.count : 0;
  const status = !job
    ? "Not run yet."
    : job.state === "running"
      ? `Running: ${points.length} of ${count} images, step ${job.step}/${job.total || "?"}`
      : job.state === "done"
        ? `Done: ${points.length} images`
        : job.state === "queued"
          ? "Queued"
          : job.state === "cancelled"
            ? `Cancelled after ${points.length} of ${count} images`
            : "Failed";
  const scoring = result && result.scoring !== "clip" ? result.scoring : null;
  return html`<section class="panel sweep" aria-labelledby="sweep-title">
    <div class="bar-row">
      <h2 id="sweep-title" tabindex="-1" ref=${heading}>Weight sweep: ${avatar.kind} ${avatar.name}</h2>
      <a href="#/avatars" class="button small">Close sweep</a>
    </div>
    <p class="muted">
      The same prompt and seed at each weight. Where likeness (CLIP-I) climbs while prompt adherence (CLIP-T)
      falls, the avatar starts to override the prompt.
    </p>
    <form ref=${formRef} onSubmit=${submit} aria-label="Weight sweep">
      <${PromptBox} id="sweep-prompt" label="Prompt" value=${form.prompt} rows=${2}
        onInput=${(v) => setForm((f) => ({ ...f, prompt: v }))}
        onSubmit=${() => formRef.current.requestSubmit()}
        placeholder="a girl playing tennis" error=${errs.prompt} />
      <div class="grid">
        <${Field} id="sweep-weights" label="Weights" error=${errs.weights} hint="2 to 11 values from 0 to 2">
          <input id="sweep-weights" value=${form.weights} onInput=${set("weights")} spellcheck="false"
            aria-describedby=${errs.weights ? "sweep-weights-error" : "sweep-weights-hint"} />
        <//>
        <${Field} id="sweep-seed" label="Seed (-1: random)" error=${errs.seed}>
          <input id="sweep-seed" type="number" value=${form.seed} onInput=${set("seed")} />
        <//>
      </div>
      <details class="options">
        <summary>Sweep options</summary>
        <div class="grid">
          <${Field} id="sweep-steps" label="Steps" error=${errs.steps}>
            <input id="sweep-steps" type="number" min="1" value=${form.steps} onInput=${set("steps")} />
          <//>
          <${Field} id="sweep-width" label="Width" error=${errs.width}>
            <input id="sweep-width" type="number" min="64" step="8" placeholder="default" value=${form.width}
              onInput=${set("width")} />
          <//>
          <${Field} id="sweep-height" label="Height" error=${errs.height}>
            <input id="sweep-height" type="number" min="64" step="8" placeholder="default" value=${form.height}
              onInput=${set("height")} />
          <//>
          <${Field} id="sweep-cfg" label="CFG scale" error=${errs.cfg_scale}>
            <input id="sweep-cfg" type="number" min="0" step="0.5" placeholder="default" value=${form.cfg_scale}
              onInput=${set("cfg_scale")} />
          <//>
          <${Field} id="sweep-negative" label="Negative prompt" error=${errs.negative_prompt} wide>
            <textarea id="sweep-negative" rows="2" value=${form.negative_prompt} onInput=${set("negative_prompt")}></textarea>
          <//>
        </div>
      </details>
      <div class="actions">
        <button type="submit" class="primary" disabled=${running}>Run sweep</button>
        <button type="button" disabled=${!running} onClick=${cancel}>Cancel sweep</button>
      </div>
    </form>
    ${errs._ ? html`<${ErrorBox} error=${errs._} />` : null}
    <p role="status" aria-live="polite" id="sweep-status">${status}</p>
    <progress aria-label="Sweep progress" max=${job && job.total ? job.total : 1}
      value=${job ? (job.state === "done" ? job.total || 1 : job.step) : 0}></progress>
    ${points.length
      ? html`<ol class="strip sweep-strip" aria-label="Images by weight">
          ${[...points]
            .sort((a, b) => a.index - b.index)
            .map(
              (p) => html`<li><figure>
                <${ApiImage} src=${p.image} alt=${`Weight ${p.weight}`} class="result" />
                <figcaption>Weight ${p.weight}</figcaption>
              </figure></li>`,
            )}
        </ol>`
      : null}
    ${result ? html`<p class="muted">Seed ${result.seed} · scored prompt: “${result.scored_prompt}”</p>` : null}
    ${scoring ? html`<p class="muted">Scores are not available: ${scoring.replace(/^unavailable: /, "")}</p>` : null}
    <div class="sweep-scores">
      <${SweepPlot} points=${points} />
      <${SweepTable} points=${points} reference=${result ? result.reference : null} />
    </div>
  </section>`;
}
