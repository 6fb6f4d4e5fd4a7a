// One training (`#/training/ID`), followed over its event stream: stage, step/total, the loss chart, the samples
// of each checkpoint, the likeness curve, the chosen step and why; Cancel/Resume; the avatar once it is done.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, follow } from "../lib/api.js";
import { handOff } from "../lib/store.js";
import { ApiImage, ErrorBox, html } from "../lib/ui.js";
import { LineChart } from "./chart.js";

const ACTIVE = ["queued", "running"];
const STAGES = {
  queued: "waiting in the queue",
  checking: "checking the photos",
  preparing: "loading the base model",
  caching: "caching latents and text embeddings",
  sampling: "drawing samples",
  training: "training",
  saving: "choosing a checkpoint and saving",
  done: "done",
  failed: "failed",
  cancelled: "cancelled",
};

function score(v) {
  return typeof v === "number" ? v.toFixed(3) : "–";
}

function Samples({ training }) {
  if (!training.samples.length) return html`<p class="muted">No samples yet: they are drawn at each checkpoint.</p>`;
  const chosen = training.chosen ? training.chosen.step : null;
  return html`<div class="samples">
    ${training.samples.map(
      (s) => html`<section class=${"sample-row" + (s.step === chosen ? " chosen" : "")} aria-label=${`Samples at step ${s.step}`}>
        <h3>Step ${s.step}${s.step === chosen ? html` <span class="badge">chosen</span>` : null}</h3>
        <p class="small-text">
          likeness ${score(s.scores.likeness)} · adherence ${score(s.scores.adherence)}
          ${s.scores.face_found !== undefined ? html` · faces found ${score(s.scores.face_found)}` : null}
        </p>
        <div class="strip">
          ${s.images.map(
            (src, i) => html`<${ApiImage} src=${src} class="result"
              alt=${`Sample ${i + 1} at step ${s.step}${s.prompts[i % (s.prompts.length || 1)] ? ": " + s.prompts[i % s.prompts.length] : ""}`} />`,
          )}
        </div>
      </section>`,
    )}
  </div>`;
}

export default function TrainingView({ id }) {
  const [training, setTraining] = useState(null);
  const [losses, setLosses] = useState([]); // [[step, loss]]
  const [error, setError] = useState(null);
  const [loadError, setLoadError] = useState(null);
  const [run, setRun] = useState(0); // a resume follows the new run's events

  const seq = useRef(0);
  // the newest answer wins: an older request that answers late must not undo a newer state
  const fetchTraining = async (signal) => {
    const n = ++seq.current;
    const t = await api(`/v1/trainings/${id}`, { signal });
    if (n === seq.current) {
      setTraining(t);
      // the stored curve, merged with what the event stream has brought (a step once)
      setLosses((l) => {
        const steps = new Set((t.losses || []).map(([s]) => s));
        return [...(t.losses || []), ...l.filter(([s]) => !steps.has(s))].sort((a, b) => a[0] - b[0]);
      });
    }
    return t;
  };
  const reload = () => fetchTraining().catch(setLoadError);
  useEffect(() => setLosses([]), [id]);
  useEffect(() => {
    reload();
    const ctl = new AbortController();
    follow(
      `/v1/trainings/${id}/events`,
      ({ event, data }) => {
        if (event === "step") {
          if (typeof data.loss === "number") {
            setLosses((l) => (l.some(([s]) => s === data.step) ? l : [...l, [data.step, data.loss]]));
          }
          setTraining((t) =>
            t ? { ...t, state: "running", step: data.step, total: data.total ?? t.total, loss: data.loss, eta: data.eta, stage: data.stage || t.stage } : t,
          );
        } else if (event === "stage") {
          setTraining((t) => (t ? { ...t, stage: data.stage } : t));
        } else if (["sample", "checkpoint", "chosen", "done", "failed", "cancelled"].includes(event)) {
          reload();
        }
      },
      { signal: ctl.signal },
    )
      .then(async () => {
        // the stream has ended; the stored training may say so a moment later
        for (let i = 0; i < 60 && !ctl.signal.aborted; i++) {
          const t = await fetchTraining(ctl.signal);
          if (!ACTIVE.includes(t.state)) break;
          await new Promise((r) => setTimeout(r, 1000));
        }
      })
      .catch((err) => err.name !== "AbortError" && setError(err));
    return () => ctl.abort();
  }, [id, run]);

  if (loadError) return html`<div class="page"><p><a href="#/training">← Training</a></p><${ErrorBox} error=${loadError} /></div>`;
  if (!training) return html`<p class="muted" role="status">Loading the training…</p>`;
  const t = training;
  const active = ACTIVE.includes(t.state);
  const act = (fn) => async () => {
    setError(null);
    try {
      await fn();
    } catch (err) {
      setError(err);
    }
  };
  const cancel = act(async () => setTraining(await api(`/v1/trainings/${id}`, { method: "DELETE" })));
  const resume = act(async () => {
    setTraining(await api(`/v1/trainings/${id}/resume`, { method: "POST" }));
    setRun((n) => n + 1);
  });
  const scored = t.samples.filter((s) => typeof s.scores.likeness === "number");
  const chosen = t.chosen;
  return html`<div class="page training-view">
    <p><a href="#/training">← Training</a></p>
    <h1>Training ${t.name}</h1>
    <p class="muted">${t.kind} · base ${t.base_model} · ${t.photos} photos · trigger <code>${t.trigger}</code></p>
    <p role="status" aria-live="polite" id="training-status">
      <span class=${`state state-${t.state}`}>${STAGES[t.stage] || t.stage}</span> · step ${t.step}/${t.total}
      ${typeof t.loss === "number" ? ` · loss ${t.loss.toFixed(4)}` : ""}
      ${active && t.eta ? ` · about ${Math.ceil(t.eta)} s left` : ""}
    </p>
    <progress aria-label="Training progress" max=${t.total || 1} value=${t.step}></progress>
    ${t.error ? html`<p class="error" role="alert">The training failed: ${t.error.message}</p>` : null}
    <div class="actions">
      ${active ? html`<button type="button" class="danger" onClick=${cancel}>Cancel training</button>` : null}
      ${t.state === "cancelled" || t.state === "failed" ? html`<button type="button" onClick=${resume}>Resume</button>` : null}
    </div>
    <${ErrorBox} error=${error} />
    ${t.avatar
      ? html`<section class="panel avatar-done" aria-labelledby="avatar-title">
          <h2 id="avatar-title">Your avatar is ready</h2>
          <p>
            <a href=${`#/avatars/lora/${encodeURIComponent(t.avatar)}`}>Avatar ${t.avatar} on the Avatars page</a>
            ${t.character ? html` · character <a href="#/characters">${t.character}</a>` : null}
          </p>
          <p>Use it in a prompt: <code class="token">${t.prompt}</code></p>
          <button type="button" onClick=${() => handOff({ params: { prompt: t.prompt } })}>Use in Generate</button>
          ${t.character_error ? html`<p class="muted">No character: ${t.character_error}</p>` : null}
        </section>`
      : null}
    ${chosen
      ? html`<section class="panel chosen" aria-labelledby="chosen-title">
          <h2 id="chosen-title">Chosen: step ${chosen.step}</h2>
          <p class="reason">${chosen.reason}</p>
          <p class="small-text">likeness ${score(chosen.scores.likeness)} · adherence ${score(chosen.scores.adherence)}</p>
        </section>`
      : null}
    <div class="charts">
      <section aria-labelledby="loss-title">
        <h2 id="loss-title">Loss</h2>
        ${losses.length
          ? html`<${LineChart} id="loss-chart" title="Training loss per step" xLabel="step" yLabel="loss"
              series=${[{ name: "loss", cls: "s-loss", points: losses }]} />`
          : html`<p class="muted">${active ? "The loss appears with the first steps." : "No loss recorded."}</p>`}
      </section>
      ${scored.length
        ? html`<section aria-labelledby="likeness-title">
            <h2 id="likeness-title">Likeness per checkpoint</h2>
            <${LineChart} id="likeness-chart" title="Likeness and prompt adherence per checkpoint" xLabel="step" yLabel="score"
              mark=${chosen ? chosen.step : null} markLabel=${chosen ? `chosen ${chosen.step}` : ""}
              series=${[
                { name: "likeness", cls: "s-likeness", points: scored.map((s) => [s.step, s.scores.likeness]) },
                { name: "adherence", cls: "s-adherence", points: scored.filter((s) => typeof s.scores.adherence === "number").map((s) => [s.step, s.scores.adherence]) },
              ]} />
          </section>`
        : null}
    </div>
    <h2>Samples</h2>
    <${Samples} training=${t} />
  </div>`;
}
