// Characters: a description and avatar tokens behind one name (<be-char:NAME> in any prompt). Create, edit,
// delete, and preview one small image of a character.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, follow } from "../lib/api.js";
import { handOff } from "../lib/store.js";
import { ApiImage, ErrorBox, Field, fieldErrors, formatTime, html, useApi } from "../lib/ui.js";
import { KINDS, tokenOf } from "./avatar_kinds.js";

const FIELDS = ["name", "description", "avatars", "negative_prompt", "seed_policy", "seed"];
const EMPTY = { name: "", description: "", avatars: "", negative_prompt: "", seed_policy: "random", seed: "" };

const tokenRe = (a) => new RegExp(`<\\s*be-${a.kind}:${a.name}(?::[^>]*)?>`, "i");

function toForm(c) {
  return {
    name: c.name,
    description: c.description || "",
    avatars: c.avatars || "",
    negative_prompt: c.negative_prompt || "",
    seed_policy: c.seed_policy || "random",
    seed: c.seed == null ? "" : String(c.seed),
  };
}

function toBody(form) {
  return {
    name: form.name.trim(),
    description: form.description,
    avatars: form.avatars,
    negative_prompt: form.negative_prompt,
    seed_policy: form.seed_policy,
    seed: form.seed === "" ? null : Number(form.seed),
  };
}

function CharacterForm({ editing, avatars, onSaved, onCancel }) {
  const [form, setForm] = useState(editing ? toForm(editing) : EMPTY);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (k) => (e) => setForm((f) => ({ ...f, [k]: e.target.value }));
  const toggle = (a) => (e) => {
    const on = e.target.checked;
    setForm((f) => {
      const rest = f.avatars.replace(tokenRe(a), " ").replace(/\s+/g, " ").trim();
      return { ...f, avatars: on ? `${rest} ${tokenOf(a)}`.trim() : rest };
    });
  };
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    setBusy(true);
    try {
      let saved;
      if (editing) {
        const before = toBody(toForm(editing));
        const after = toBody(form);
        const patch = Object.fromEntries(Object.entries(after).filter(([k, v]) => v !== before[k]));
        saved = Object.keys(patch).length
          ? await api(`/v1/characters/${encodeURIComponent(editing.name)}`, { method: "PATCH", json: patch })
          : editing;
      } else {
        saved = await api("/v1/characters", { json: toBody(form) });
        setForm(EMPTY);
      }
      onSaved(saved, !!editing);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const errs = fieldErrors(error, FIELDS);
  const described = (id, err) => (err ? `${id}-error` : undefined);
  return html`<form class="panel" onSubmit=${submit} aria-labelledby="character-form-title">
    <h2 id="character-form-title">${editing ? `Edit ${editing.name}` : "New character"}</h2>
    <${Field} id="character-name" label="Name" error=${errs.name}
      hint="Letters, digits, _ . - (up to 64); the prompt calls it as <be-char:NAME>">
      <input id="character-name" value=${form.name} onInput=${set("name")} required spellcheck="false" autocomplete="off"
        aria-describedby=${errs.name ? "character-name-error" : "character-name-hint"} />
    <//>
    <${Field} id="character-description" label="Description" error=${errs.description}
      hint="What the prompt says about them, e.g. a girl of 8 with curly red hair, green raincoat">
      <textarea id="character-description" rows="3" value=${form.description} onInput=${set("description")}
        aria-describedby=${errs.description ? "character-description-error" : "character-description-hint"}></textarea>
    <//>
    ${avatars.length
      ? html`<fieldset class="avatar-picks">
          <legend>Avatars</legend>
          ${avatars.map(
            (a) => html`<label>
              <input type="checkbox" checked=${tokenRe(a).test(form.avatars)} onChange=${toggle(a)} />
              ${KINDS[a.kind]?.label || a.kind}: ${a.name}
            </label>`,
          )}
        </fieldset>`
      : html`<p class="muted">No avatars yet: <a href="#/avatars">add a face or a LoRA</a> to give a character a
          fixed look.</p>`}
    <${Field} id="character-avatars" label="Avatar tokens" error=${errs.avatars}
      hint="Ticked avatars appear here; change a weight by editing its number">
      <input id="character-avatars" value=${form.avatars} onInput=${set("avatars")} spellcheck="false"
        aria-describedby=${errs.avatars ? "character-avatars-error" : "character-avatars-hint"} />
    <//>
    <details class="options" open=${!!(errs.negative_prompt || errs.seed || errs.seed_policy)}>
      <summary>More</summary>
      <div class="grid">
        <${Field} id="character-negative" label="Negative prompt" error=${errs.negative_prompt} wide>
          <input id="character-negative" value=${form.negative_prompt} onInput=${set("negative_prompt")}
            aria-describedby=${described("character-negative", errs.negative_prompt)} />
        <//>
        <${Field} id="character-policy" label="Seed" error=${errs.seed_policy}>
          <select id="character-policy" value=${form.seed_policy} onChange=${set("seed_policy")}>
            <option value="random">Random each time</option>
            <option value="fixed">Fixed (the same scene repeats)</option>
          </select>
        <//>
        <${Field} id="character-seed" label="Fixed seed" error=${errs.seed}>
          <input id="character-seed" type="number" min="0" value=${form.seed} onInput=${set("seed")}
            aria-describedby=${described("character-seed", errs.seed)} />
        <//>
      </div>
    </details>
    ${errs._ ? html`<${ErrorBox} error=${errs._} />` : null}
    <div class="actions">
      <button type="submit" class="primary" disabled=${busy}>${editing ? "Save changes" : "Create character"}</button>
      ${editing ? html`<button type="button" onClick=${onCancel}>Cancel edit</button>` : null}
    </div>
  </form>`;
}

function CharacterCard({ character, size, onEdit, onChanged, onStatus }) {
  const [confirm, setConfirm] = useState(false);
  const [error, setError] = useState(null);
  const [preview, setPreview] = useState(null); // {state, step, total, image, seed}
  const abort = useRef(null);
  useEffect(() => () => abort.current?.abort(), []);
  const path = `/v1/characters/${encodeURIComponent(character.name)}`;
  const remove = async () => {
    try {
      await api(path, { method: "DELETE" });
      onStatus(`Deleted ${character.name}.`);
      onChanged();
    } catch (err) {
      setError(err);
    }
  };
  const run = async () => {
    setError(null);
    abort.current?.abort();
    const ctl = new AbortController();
    abort.current = ctl;
    setPreview({ state: "queued", step: 0, total: 0 });
    try {
      const body = { prompt: `<be-char:${character.name}>`, seed: -1 };
      for (const k of ["width", "height", "steps"]) if (size[k] !== "") body[k] = Number(size[k]);
      const job = await api("/v1/jobs", { json: body, signal: ctl.signal });
      await follow(
        `/v1/jobs/${job.id}/events`,
        ({ event, data }) => {
          if (event === "step") setPreview((p) => ({ ...p, state: "running", step: data.step, total: data.total }));
          else if (event === "done") {
            const img = data.result && data.result.images[0];
            setPreview((p) => ({ ...p, state: "done", image: img && img.url, seed: img && img.seed }));
          } else if (event === "failed") {
            setPreview((p) => ({ ...p, state: "failed" }));
            setError(data.error || { message: "The preview failed." });
          } else if (event === "cancelled") setPreview((p) => ({ ...p, state: "cancelled" }));
        },
        { signal: ctl.signal },
      );
    } catch (err) {
      if (err.name !== "AbortError") {
        setPreview(null);
        setError(err);
      }
    }
  };
  const busy = preview && (preview.state === "queued" || preview.state === "running");
  const c = character;
  return html`<li class="panel character-card" aria-label=${`Character ${c.name}`}>
    <h3>${c.name}</h3>
    <p class="character-description">${c.description || html`<span class="muted">No description.</span>`}</p>
    ${c.avatars ? html`<p><span class="muted">Avatars:</span> <code>${c.avatars}</code></p>` : null}
    ${c.negative_prompt ? html`<p><span class="muted">Negative:</span> ${c.negative_prompt}</p>` : null}
    <p class="muted">
      Seed: ${c.seed_policy === "fixed" ? `fixed ${c.seed}` : "random"} · token <code>${`<be-char:${c.name}>`}</code>
      ${` · changed ${formatTime(c.updated)}`}
    </p>
    <div class="actions">
      <button type="button" class="small primary" disabled=${busy} onClick=${run}>
        Preview<span class="sr-only"> ${c.name}</span>
      </button>
      <button type="button" class="small" onClick=${() => onEdit(c)}>Edit<span class="sr-only"> ${c.name}</span></button>
      <button type="button" class="small" onClick=${() => handOff({ params: { prompt: `<be-char:${c.name}>, ` } })}>
        Use in Generate<span class="sr-only"> (${c.name})</span>
      </button>
      <button type="button" class="small danger" onClick=${() => setConfirm(true)}>
        Delete<span class="sr-only"> ${c.name}</span>
      </button>
    </div>
    ${confirm
      ? html`<div class="confirm" role="group" aria-label=${`Delete ${c.name}?`}>
          <p>Delete <strong>${c.name}</strong>? Prompts with <code>${`<be-char:${c.name}>`}</code> will stop working.</p>
          <div class="actions">
            <button type="button" class="small danger" onClick=${remove}>Yes, delete ${c.name}</button>
            <button type="button" class="small" onClick=${() => setConfirm(false)}>Keep</button>
          </div>
        </div>`
      : null}
    ${preview
      ? html`<div class="character-preview">
          <p role="status" aria-live="polite">
            ${preview.state === "running" ? `Preview: step ${preview.step}/${preview.total}` : `Preview: ${preview.state}`}
          </p>
          ${preview.image
            ? html`<figure>
                <${ApiImage} src=${preview.image} alt=${`Preview of ${c.name}`} />
                <figcaption>Seed ${preview.seed}</figcaption>
              </figure>`
            : null}
        </div>`
      : null}
    <${ErrorBox} error=${error} />
  </li>`;
}

export default function Characters() {
  const list = useApi("/v1/characters");
  const avatars = useApi("/v1/avatars");
  const [editing, setEditing] = useState(null);
  const [status, setStatus] = useState("");
  const [size, setSize] = useState({ width: "384", height: "384", steps: "20" });
  const characters = list.data ? list.data.data : [];
  const setSizeOf = (k) => (e) => setSize((s) => ({ ...s, [k]: e.target.value }));
  return html`<div class="page characters">
    <h1>Characters</h1>
    <p class="muted">A character is a description and avatar tokens behind one name; write${" "}
      <code>${"<be-char:NAME>"}</code> in any prompt.</p>
    <${CharacterForm}
      key=${editing ? `edit-${editing.name}-${editing.updated}` : "new"}
      editing=${editing}
      avatars=${avatars.data ? avatars.data.data : []}
      onCancel=${() => setEditing(null)}
      onSaved=${(saved, wasEdit) => {
        setEditing(null);
        setStatus(wasEdit ? `Saved ${saved.name}.` : `Created ${saved.name}.`);
        list.reload();
      }}
    />
    <section aria-labelledby="characters-title">
      <h2 id="characters-title">Your characters</h2>
      <details class="options">
        <summary>Preview settings</summary>
        <div class="grid">
          <${Field} id="preview-width" label="Preview width">
            <input id="preview-width" type="number" min="64" step="8" value=${size.width} onInput=${setSizeOf("width")} />
          <//>
          <${Field} id="preview-height" label="Preview height">
            <input id="preview-height" type="number" min="64" step="8" value=${size.height} onInput=${setSizeOf("height")} />
          <//>
          <${Field} id="preview-steps" label="Preview steps">
            <input id="preview-steps" type="number" min="1" value=${size.steps} onInput=${setSizeOf("steps")} />
          <//>
        </div>
      </details>
      <p role="status" class="muted" id="characters-status">${status}</p>
      <${ErrorBox} error=${list.error} />
      ${list.data && !characters.length ? html`<p class="muted">No characters yet.</p>` : null}
      <ul class="character-list">
        ${characters.map(
          (c) => html`<${CharacterCard} key=${c.name} character=${c} size=${size} onChanged=${list.reload}
            onStatus=${setStatus}
            onEdit=${(ch) => {
              setEditing(ch);
              setStatus("");
              requestAnimationFrame(() => document.getElementById("character-name")?.focus());
            }} />`,
        )}
      </ul>
    </section>
  </div>`;
}
