// Training: the key's LoRA trainings and a "New training" form (photos dropped or picked, shown as thumbnails
// with each file's problem from the server's photo checks; name, kind; options folded). `#/training/ID` follows
// one training (pages/training_view.js).
import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "../lib/api.js";
import { DropZone, ErrorBox, Field, fieldErrors, formatTime, html, useApi } from "../lib/ui.js";
import TrainingView from "./training_view.js";

const KINDS = [
  ["face", "Face (a person)"],
  ["character", "Character (drawn)"],
  ["style", "Style"],
  ["object", "Object"],
];
const OPTIONS = ["trigger", "character", "base_model", "steps", "rank", "resolution", "checkpoint_every", "learning_rate", "optimizer", "batch_size", "seed", "sample_prompts"]; // prettier-ignore
const FIELDS = ["name", "kind", "photos", "zip", "face_avatars", ...OPTIONS];
const EMPTY = { name: "", kind: "face", ...Object.fromEntries(OPTIONS.map((k) => [k, ""])) };

// Chosen files with an object URL each for the thumbnail (revoked when the file leaves the list).
function usePhotos() {
  const [photos, setPhotos] = useState([]);
  const held = useRef([]);
  useEffect(() => () => held.current.forEach((p) => URL.revokeObjectURL(p.url)), []);
  const add = (files) => {
    setPhotos((list) => {
      const seen = new Set(list.map((p) => `${p.file.name}/${p.file.size}`));
      const more = files
        .filter((f) => !seen.has(`${f.name}/${f.size}`))
        .map((file) => ({ file, url: file.type.startsWith("image/") ? URL.createObjectURL(file) : null }));
      held.current = [...held.current, ...more.filter((p) => p.url)];
      return [...list, ...more];
    });
  };
  const remove = (victims) => {
    victims.forEach((p) => p.url && URL.revokeObjectURL(p.url));
    held.current = held.current.filter((p) => !victims.includes(p));
    setPhotos((list) => list.filter((p) => !victims.includes(p)));
  };
  return { photos, add, remove };
}

function NewTraining() {
  const [form, setForm] = useState(EMPTY);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const { photos, add, remove } = usePhotos();
  const models = useApi("/sdapi/v1/sd-models");
  const set = (k) => (e) => setForm((f) => ({ ...f, [k]: e.target.value }));

  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    const data = new FormData();
    for (const [k, v] of Object.entries(form)) if (String(v).trim() !== "") data.append(k, String(v).trim());
    for (const p of photos) data.append(p.file.name.toLowerCase().endsWith(".zip") ? "zip" : "photos", p.file, p.file.name);
    setBusy(true);
    try {
      const made = await api("/v1/trainings", { form: data });
      location.hash = `#/training/${made.id}`;
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const errs = fieldErrors(error, FIELDS);
  const photoErr = errs.photos || errs.zip;
  const problems = (error && error.problems) || [];
  const byFile = {};
  for (const p of problems) if (p.file) (byFile[p.file] = byFile[p.file] || []).push(p.problem);
  const general = problems.filter((p) => !p.file).map((p) => p.problem);
  const unlisted = Object.keys(byFile).filter((name) => !photos.some((p) => p.file.name === name));
  const num = (key, label, attrs = {}) => html`<${Field} id=${`train-${key}`} label=${label} error=${errs[key]}>
    <input id=${`train-${key}`} type="number" value=${form[key]} onInput=${set(key)} placeholder="preset" ...${attrs} />
  <//>`;
  return html`<form class="panel new-training" onSubmit=${submit} aria-labelledby="new-training-title">
    <h2 id="new-training-title">New training</h2>
    <p class="muted">20–40 photos of one person, character, style or object make a LoRA avatar of your key.</p>
    <${DropZone} id="train-photos" label="Photos (or a zip)" accept="image/*,.zip" multiple onFiles=${add}
      describedby=${photoErr ? "train-photos-error" : undefined}>
      <p class="hint">Drop photos here or pick them; they are checked when you start.</p>
    <//>
    ${photoErr
      ? html`<div class="field-error photo-errors" role="alert" id="train-photos-error">
          ${problems.length
            ? html`<p>${Object.keys(byFile).length} file(s) cannot be used${general.length ? "; " + general.join("; ") : "."}</p>
                ${unlisted.length ? html`<ul>${unlisted.map((n) => html`<li>${n}: ${byFile[n].join("; ")}</li>`)}</ul>` : null}`
            : html`<p>${photoErr}</p>`}
        </div>`
      : null}
    ${photos.length
      ? html`<div class="photo-head">
            <span>${photos.length} file(s) chosen</span>
            <button type="button" class="small" onClick=${() => remove(photos)}>Remove all photos</button>
          </div>
          <ul class="photo-grid" aria-label="Chosen photos">
            ${photos.map(
              (p) => html`<li class=${byFile[p.file.name] ? "bad" : ""}>
                ${p.url ? html`<img src=${p.url} alt=${p.file.name} class="thumb" />` : html`<span class="thumb zip" aria-hidden="true">zip</span>`}
                <span class="photo-name">${p.file.name}</span>
                ${byFile[p.file.name] ? html`<span class="photo-problem">${byFile[p.file.name].join("; ")}</span>` : null}
                <button type="button" class="small" onClick=${() => remove([p])}>Remove<span class="sr-only"> ${p.file.name}</span></button>
              </li>`,
            )}
          </ul>`
      : null}
    <div class="grid">
      <${Field} id="train-name" label="Name (of the avatar)" error=${errs.name}>
        <input id="train-name" required value=${form.name} onInput=${set("name")} placeholder="sasha" autocomplete="off" />
      <//>
      <${Field} id="train-kind" label="Kind" error=${errs.kind}>
        <select id="train-kind" value=${form.kind} onChange=${set("kind")}>
          ${KINDS.map(([k, label]) => html`<option value=${k}>${label}</option>`)}
        </select>
      <//>
    </div>
    <details class="options">
      <summary>Options</summary>
      <div class="grid">
        ${num("steps", "Steps", { min: 1 })}
        ${num("rank", "Rank", { min: 1, max: 256 })}
        ${num("resolution", "Resolution (px)", { min: 256, max: 2048, step: 64 })}
        ${num("checkpoint_every", "Checkpoint every (steps)", { min: 1 })}
        ${num("learning_rate", "Learning rate", { min: 0, step: "any" })}
        ${num("batch_size", "Batch size", { min: 1, max: 16 })}
        ${num("seed", "Seed", { min: 0, placeholder: "random" })}
        <${Field} id="train-optimizer" label="Optimizer" error=${errs.optimizer}>
          <select id="train-optimizer" value=${form.optimizer} onChange=${set("optimizer")}>
            <option value="">Preset (AdamW)</option>
            <option value="adamw">AdamW</option>
            <option value="adamw8bit">AdamW 8-bit</option>
            <option value="prodigy">Prodigy</option>
          </select>
        <//>
        <${Field} id="train-base_model" label="Base model" error=${errs.base_model}>
          <select id="train-base_model" value=${form.base_model} onChange=${set("base_model")}>
            <option value="">Loaded model</option>
            ${(models.data || []).map((m) => html`<option value=${m.model_name}>${m.title}</option>`)}
          </select>
        <//>
        <${Field} id="train-trigger" label="Trigger word" error=${errs.trigger}>
          <input id="train-trigger" value=${form.trigger} onInput=${set("trigger")} placeholder="NAME_CLASS" />
        <//>
        <${Field} id="train-character" label="Also make a character named" error=${errs.character}>
          <input id="train-character" value=${form.character} onInput=${set("character")} placeholder="none" />
        <//>
        <${Field} id="train-sample_prompts" label="Sample prompts (one a line; {trigger} is the trigger word)"
          error=${errs.sample_prompts} wide>
          <textarea id="train-sample_prompts" rows="3" value=${form.sample_prompts} onInput=${set("sample_prompts")}
            placeholder="the kind's prompts"></textarea>
        <//>
      </div>
    </details>
    ${errs._ ? html`<${ErrorBox} error=${errs._} />` : null}
    <div class="actions">
      <button type="submit" class="primary" disabled=${busy}>${busy ? "Checking the photos…" : "Start training"}</button>
    </div>
  </form>`;
}

function TrainingList() {
  const list = useApi("/v1/trainings");
  const items = list.data ? list.data.data : [];
  return html`<section aria-labelledby="trainings-title">
    <h2 id="trainings-title">Your trainings</h2>
    <${ErrorBox} error=${list.error} />
    ${list.data && items.length === 0 ? html`<p class="muted">No trainings yet.</p>` : null}
    ${items.length
      ? html`<table>
          <thead><tr><th scope="col">Name</th><th scope="col">Kind</th><th scope="col">State</th>
            <th scope="col">Step</th><th scope="col">Started</th></tr></thead>
          <tbody>
            ${items.map(
              (t) => html`<tr>
                <td><a href=${`#/training/${t.id}`}>${t.name}</a></td>
                <td>${t.kind}</td>
                <td><span class=${`state state-${t.state}`}>${t.stage}</span></td>
                <td>${t.step}/${t.total}</td>
                <td>${formatTime(t.created)}</td>
              </tr>`,
            )}
          </tbody>
        </table>`
      : null}
  </section>`;
}

export default function Training({ rest }) {
  if (rest && rest[0]) return html`<${TrainingView} id=${rest[0]} />`;
  return html`<div class="page training">
    <h1>Training</h1>
    <${NewTraining} />
    <${TrainingList} />
  </div>`;
}
