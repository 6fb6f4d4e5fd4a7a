// Generate: one prompt box and a button; everything else folded under "Options". Live progress with
// previews from the job's events, Cancel (or Esc), the key's queue, and the finished images.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, download, fileToBase64, follow } from "../lib/api.js";
import { promptHistory, rememberPrompt, takeHandOff } from "../lib/store.js";
import { PromptBox } from "../lib/prompt.js";
import { ApiImage, ErrorBox, Field, fieldErrors, html, useApi } from "../lib/ui.js";

const DEFAULTS = {
  prompt: "",
  negative_prompt: "",
  model: "",
  width: "",
  height: "",
  steps: "",
  sampler: "",
  cfg_scale: "",
  seed: -1,
  batch_size: 1,
  denoising_strength: 0.75,
};
const FIELDS = ["prompt", "negative_prompt", "model", "width", "height", "steps", "sampler", "cfg_scale", "seed"];

function previewSrc(p) {
  return p.startsWith("data:") ? p : `data:image/png;base64,${p}`;
}

// The request body: empty fields are left out, so the model's profile (and A1111's defaults) apply.
function body(form, init) {
  const out = { prompt: form.prompt, negative_prompt: form.negative_prompt, seed: Number(form.seed) };
  for (const k of ["width", "height", "steps", "cfg_scale"]) if (form[k] !== "") out[k] = Number(form[k]);
  if (form.sampler) out.sampler = form.sampler;
  if (form.model) out.model = form.model;
  out.batch_size = Number(form.batch_size) || 1;
  if (init) {
    out.init_images = [init.b64];
    out.denoising_strength = Number(form.denoising_strength);
  }
  return out;
}

function Queue({ version, onCancel }) {
  const jobs = useApi(`/v1/jobs?limit=20&v=${version}`);
  useEffect(() => {
    const t = setInterval(jobs.reload, 3000);
    return () => clearInterval(t);
  }, [jobs.reload]);
  const list = jobs.data ? jobs.data.data : [];
  return html`<section class="queue" aria-labelledby="queue-title">
    <h2 id="queue-title">Your queue</h2>
    ${list.length === 0 ? html`<p class="muted">No jobs yet.</p>` : null}
    <ul>
      ${list.map(
        (j) => html`<li>
          <span class=${`state state-${j.state}`}>${j.state}</span>
          <span class="muted">${j.id}</span>
          ${j.state === "running" ? html` ${j.progress.step}/${j.progress.total}` : null}
          ${j.state === "queued" || j.state === "running"
            ? html`<button type="button" class="small" onClick=${() => onCancel(j.id).then(jobs.reload)}>
                Cancel<span class="sr-only"> job ${j.id}</span>
              </button>`
            : null}
        </li>`,
      )}
    </ul>
  </section>`;
}

export default function Generate() {
  const [form, setForm] = useState(DEFAULTS);
  const [init, setInit] = useState(null); // {name, b64}
  const [job, setJob] = useState(null); // {id, state, step, total, preview}
  const [images, setImages] = useState([]);
  const [error, setError] = useState(null);
  const [version, setVersion] = useState(0);
  const [showOptions, setShowOptions] = useState(false);
  const abort = useRef(null);
  const formRef = useRef(null);
  const models = useApi("/sdapi/v1/sd-models");
  const samplers = useApi("/sdapi/v1/samplers");
  const set = (k) => (e) => setForm((f) => ({ ...f, [k]: e.target ? e.target.value : e }));

  useEffect(() => {
    const handed = takeHandOff();
    if (handed) {
      if (handed.params) setForm((f) => ({ ...f, ...handed.params }));
      if (handed.init) setInit(handed.init);
      if (handed.init || handed.params) setShowOptions(true); // what was handed over is in view
    }
    // paste an image anywhere on the page: it becomes the init image (img2img), as in A1111
    const onPaste = async (e) => {
      const file = [...(e.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
      if (!file) return;
      setInit({ name: file.name || "pasted image", b64: await fileToBase64(file) });
      setShowOptions(true);
    };
    document.addEventListener("paste", onPaste);
    return () => {
      document.removeEventListener("paste", onPaste);
      abort.current?.abort();
    };
  }, []);

  const running = job && (job.state === "queued" || job.state === "running");
  const cancel = (id) => api(`/v1/jobs/${id}`, { method: "DELETE" }).catch((e) => setError(e));
  useEffect(() => {
    const onKey = (e) => {
      if (e.key === "Escape" && running) cancel(job.id);
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, [running, job]);

  const submit = async (e) => {
    e?.preventDefault();
    setError(null);
    rememberPrompt(form.prompt);
    abort.current?.abort();
    const ctl = new AbortController();
    abort.current = ctl;
    try {
      const accepted = await api("/v1/jobs", { json: body(form, init) });
      setJob({ id: accepted.id, state: "queued", step: 0, total: 0, preview: null });
      setVersion((v) => v + 1);
      await follow(
        `/v1/jobs/${accepted.id}/events`,
        ({ event, data }) => {
          if (event === "step" || event === "progress") {
            setJob((j) => ({
              ...j,
              state: "running",
              step: data.step ?? j.step,
              total: data.total ?? j.total,
              preview: data.preview ? previewSrc(data.preview) : j.preview,
            }));
          } else if (event === "started") {
            setJob((j) => ({ ...j, state: "running" }));
          } else if (event === "done") {
            setJob((j) => ({ ...j, state: "done", step: j.total || j.step }));
            setImages(data.result ? data.result.images : []);
          } else if (event === "failed") {
            setJob((j) => ({ ...j, state: "failed" }));
            setError(data.error ? data.error.message : "The job failed.");
          } else if (event === "cancelled") {
            setJob((j) => ({ ...j, state: "cancelled" }));
          }
        },
        { signal: ctl.signal },
      );
      setVersion((v) => v + 1);
    } catch (err) {
      if (err.name !== "AbortError") setError(err);
    }
  };

  const errs = fieldErrors(error, FIELDS);
  const history = promptHistory();
  const status = job
    ? job.state === "running"
      ? `running ${job.step}/${job.total || "?"}`
      : job.state === "done"
        ? `done ${job.total}/${job.total}`
        : job.state
    : "idle";
  return html`<div class="page generate">
    <h1>Generate</h1>
    <form ref=${formRef} onSubmit=${submit} aria-label="Generate an image">
      <${PromptBox}
        id="prompt"
        label="Prompt"
        value=${form.prompt}
        onInput=${(v) => setForm((f) => ({ ...f, prompt: v }))}
        onSubmit=${() => formRef.current.requestSubmit()}
        placeholder="a girl playing tennis, watercolor — type <be- for your avatars"
        error=${errs.prompt}
      />
      <div class="actions">
        <button type="submit" class="primary">Generate</button>
        <button type="button" disabled=${!running} onClick=${() => cancel(job.id)}>Cancel</button>
        <span class="muted kbd-hint">Ctrl+Enter generates · Esc cancels</span>
      </div>
      <details class="options" open=${showOptions} onToggle=${(e) => setShowOptions(e.target.open)}>
        <summary>Options</summary>
        <div class="grid">
          <${Field} id="negative" label="Negative prompt" error=${errs.negative_prompt} wide>
            <textarea id="negative" rows="2" value=${form.negative_prompt} onInput=${set("negative_prompt")}></textarea>
          <//>
          <${Field} id="model" label="Model" error=${errs.model}>
            <select id="model" value=${form.model} onChange=${set("model")}>
              <option value="">Loaded model</option>
              ${(models.data || []).map((m) => html`<option value=${m.model_name}>${m.title}</option>`)}
            </select>
          <//>
          <${Field} id="sampler" label="Sampler" error=${errs.sampler}>
            <select id="sampler" value=${form.sampler} onChange=${set("sampler")}>
              <option value="">Model default</option>
              ${(samplers.data || []).map((s) => html`<option value=${s.name}>${s.name}</option>`)}
            </select>
          <//>
          <${Field} id="width" label="Width" error=${errs.width}>
            <input id="width" type="number" min="64" step="8" placeholder="default" value=${form.width} onInput=${set("width")} />
          <//>
          <${Field} id="height" label="Height" error=${errs.height}>
            <input id="height" type="number" min="64" step="8" placeholder="default" value=${form.height} onInput=${set("height")} />
          <//>
          <${Field} id="steps" label="Steps" error=${errs.steps}>
            <input id="steps" type="number" min="1" placeholder="default" value=${form.steps} onInput=${set("steps")} />
          <//>
          <${Field} id="cfg" label="CFG scale" error=${errs.cfg_scale}>
            <input id="cfg" type="number" min="0" step="0.5" placeholder="default" value=${form.cfg_scale} onInput=${set("cfg_scale")} />
          <//>
          <${Field} id="seed" label="Seed (-1: random)" error=${errs.seed}>
            <input id="seed" type="number" value=${form.seed} onInput=${set("seed")} />
          <//>
          <${Field} id="count" label="Images">
            <input id="count" type="number" min="1" max="8" value=${form.batch_size} onInput=${set("batch_size")} />
          <//>
          <${Field} id="init" label="Init image (img2img; or paste one)" wide>
            <input id="init" type="file" accept="image/*" onChange=${async (e) => {
              const f = e.target.files[0];
              if (f) setInit({ name: f.name, b64: await fileToBase64(f) });
            }} />
          <//>
          ${init
            ? html`<div class="init wide">
                <img src=${`data:image/png;base64,${init.b64}`} alt="Init image" class="thumb" />
                <span>${init.name}</span>
                <${Field} id="strength" label="Denoising strength">
                  <input id="strength" type="number" min="0" max="1" step="0.05" value=${form.denoising_strength}
                    onInput=${set("denoising_strength")} />
                <//>
                <button type="button" onClick=${() => setInit(null)}>Remove init image</button>
              </div>`
            : null}
          ${history.length
            ? html`<${Field} id="history" label="Earlier prompts" wide>
                <select id="history" onChange=${(e) => e.target.value && setForm((f) => ({ ...f, prompt: e.target.value }))}>
                  <option value="">Pick a prompt…</option>
                  ${history.map((p) => html`<option value=${p}>${p.slice(0, 80)}</option>`)}
                </select>
              <//>`
            : null}
        </div>
      </details>
    </form>
    ${errs._ ? html`<${ErrorBox} error=${errs._} />` : null}
    <section class="progress" aria-label="Progress">
      <p role="status" aria-live="polite" id="job-status">${status}</p>
      <progress aria-label="Generation progress" max=${job && job.total ? job.total : 1}
        value=${job ? (job.state === "done" ? job.total || 1 : job.step) : 0}></progress>
      ${running && job.preview ? html`<img class="preview" src=${job.preview} alt="Live preview" />` : null}
    </section>
    <section class="results" aria-label="Results">
      ${images.map(
        (img, i) => html`<figure>
          <${ApiImage} src=${img.url} alt=${form.prompt.slice(0, 100) || "Generated image"} class="result" />
          <figcaption>
            Seed ${img.seed}
            <button type="button" class="small" onClick=${() => download(img.url, `pictale-${img.seed}.png`)}>
              Download<span class="sr-only"> image ${i + 1}</span>
            </button>
          </figcaption>
        </figure>`,
      )}
    </section>
    <${Queue} version=${version} onCancel=${cancel} />
  </div>`;
}
