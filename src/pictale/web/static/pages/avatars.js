// Avatars: upload faces, styles, poses, LoRAs and embeddings; see, rename and delete them; copy their token;
// run a weight sweep on one (#/avatars/sweep/KIND/NAME).
import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "../lib/api.js";
import { handOff } from "../lib/store.js";
import { ApiImage, ErrorBox, Field, fieldErrors, formatBytes, formatTime, html, useApi } from "../lib/ui.js";
import { copyText, KIND_NAMES, KINDS, tokenOf } from "./avatar_kinds.js";
import Sweep from "./avatar_sweep.js";
import UploadForm from "./avatar_upload.js";

const EDIT_FIELDS = ["name", "trigger_words", "token"];

// Inline rename (and trigger words / token for LoRAs and embeddings); the server's message by its field.
function EditForm({ avatar, onSaved, onClose }) {
  const kind = KINDS[avatar.kind];
  const [form, setForm] = useState({
    name: avatar.name,
    trigger_words: (avatar.trigger_words || []).join(", "),
    token: avatar.token || "",
  });
  const [error, setError] = useState(null);
  const base = `${avatar.kind}-${avatar.name}`;
  const first = useRef(null);
  useEffect(() => first.current?.focus(), []);
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    const patch = {};
    if (form.name.trim() !== avatar.name) patch.name = form.name.trim();
    if (kind.words && form.trigger_words !== (avatar.trigger_words || []).join(", ")) {
      patch.trigger_words = form.trigger_words;
    }
    if (kind.token && form.token.trim() !== (avatar.token || "")) patch.token = form.token.trim();
    if (!Object.keys(patch).length) return onClose();
    try {
      const saved = await api(`/v1/avatars/${avatar.kind}/${encodeURIComponent(avatar.name)}`, {
        method: "PATCH",
        json: patch,
      });
      onSaved(saved);
    } catch (err) {
      setError(err);
    }
  };
  const errs = fieldErrors(error, EDIT_FIELDS);
  const set = (k) => (e) => setForm((f) => ({ ...f, [k]: e.target.value }));
  return html`<form class="edit" onSubmit=${submit} aria-label=${`Rename ${avatar.name}`}>
    <${Field} id=${`${base}-rename`} label="New name" error=${errs.name}>
      <input id=${`${base}-rename`} ref=${first} value=${form.name} onInput=${set("name")} required spellcheck="false"
        aria-describedby=${errs.name ? `${base}-rename-error` : undefined} />
    <//>
    ${kind.words
      ? html`<${Field} id=${`${base}-words`} label="Trigger words" error=${errs.trigger_words}>
          <input id=${`${base}-words`} value=${form.trigger_words} onInput=${set("trigger_words")} />
        <//>`
      : null}
    ${kind.token
      ? html`<${Field} id=${`${base}-token`} label="Token" error=${errs.token}>
          <input id=${`${base}-token`} value=${form.token} onInput=${set("token")} />
        <//>`
      : null}
    ${errs._ ? html`<${ErrorBox} error=${errs._} />` : null}
    <div class="actions">
      <button type="submit" class="primary small">Save</button>
      <button type="button" class="small" onClick=${onClose}>Cancel</button>
    </div>
  </form>`;
}

function AvatarCard({ avatar, onChanged, onStatus }) {
  const [mode, setMode] = useState(null); // null | "edit" | "delete"
  const [error, setError] = useState(null);
  const token = tokenOf(avatar);
  const path = `/v1/avatars/${avatar.kind}/${encodeURIComponent(avatar.name)}`;
  const remove = async () => {
    setError(null);
    try {
      await api(path, { method: "DELETE" });
      onStatus(`Deleted the ${avatar.kind} avatar ${avatar.name}.`);
      onChanged();
    } catch (err) {
      setError(err);
    }
  };
  const copy = async () => {
    const ok = await copyText(token);
    onStatus(ok ? `Copied ${token}` : `Copy this token by hand: ${token}`);
  };
  const words = avatar.trigger_words || [];
  return html`<li class="avatar-card panel" aria-label=${`${avatar.kind} avatar ${avatar.name}`}>
    <div class="avatar-head">
      ${avatar.thumbnail_url
        ? html`<${ApiImage} src=${avatar.thumbnail_url} alt=${`${avatar.name} (${avatar.kind})`} class="avatar-thumb" />`
        : html`<span class="avatar-icon" aria-hidden="true">${avatar.kind === "lora" ? "LoRA" : "TI"}</span>`}
      <div class="avatar-meta">
        <h4>${avatar.name}</h4>
        <dl>
          <dt>Kind</dt><dd>${KINDS[avatar.kind]?.label || avatar.kind}</dd>
          <dt>Size</dt><dd>${formatBytes(avatar.size)}${avatar.files > 1 ? ` · ${avatar.files} files` : ""}</dd>
          ${avatar.family ? html`<dt>Model family</dt><dd>${avatar.family}</dd>` : null}
          ${KINDS[avatar.kind]?.words
            ? html`<dt>Trigger words</dt><dd class="trigger-words">${words.length ? words.join(", ") : "none"}</dd>`
            : null}
          ${avatar.token ? html`<dt>Embedding token</dt><dd><code>${avatar.token}</code></dd>` : null}
          <dt>Added</dt><dd>${formatTime(avatar.created)}</dd>
        </dl>
      </div>
    </div>
    <p class="token-line"><code class="token">${token}</code></p>
    <div class="actions">
      <button type="button" class="small" onClick=${copy}>Copy token<span class="sr-only"> of ${avatar.name}</span></button>
      <button type="button" class="small" onClick=${() => handOff({ params: { prompt: `${token} ` } })}>
        Use in Generate<span class="sr-only"> (${avatar.name})</span>
      </button>
      <a class="button small" href=${`#/avatars/sweep/${avatar.kind}/${encodeURIComponent(avatar.name)}`}>
        Weight sweep<span class="sr-only"> of ${avatar.name}</span>
      </a>
      <button type="button" class="small" aria-expanded=${mode === "edit" ? "true" : "false"}
        onClick=${() => setMode(mode === "edit" ? null : "edit")}>
        Rename<span class="sr-only"> ${avatar.name}</span>
      </button>
      <button type="button" class="small danger" onClick=${() => setMode("delete")}>
        Delete<span class="sr-only"> ${avatar.name}</span>
      </button>
    </div>
    ${mode === "edit"
      ? html`<${EditForm}
          avatar=${avatar}
          onClose=${() => setMode(null)}
          onSaved=${(saved) => {
            setMode(null);
            onStatus(`Saved the ${saved.kind} avatar ${saved.name}.`);
            onChanged();
          }}
        />`
      : null}
    ${mode === "delete"
      ? html`<div class="confirm" role="group" aria-label=${`Delete ${avatar.name}?`}>
          <p>Delete the ${avatar.kind} avatar <strong>${avatar.name}</strong>? Prompts and characters that use${" "}
            <code>${token}</code>${" "}will stop working.</p>
          <div class="actions">
            <button type="button" class="small danger" onClick=${remove}>Yes, delete ${avatar.name}</button>
            <button type="button" class="small" onClick=${() => setMode(null)}>Keep it</button>
          </div>
        </div>`
      : null}
    <${ErrorBox} error=${error} />
  </li>`;
}

export default function Avatars({ rest }) {
  const [filter, setFilter] = useState("");
  const [status, setStatus] = useState("");
  const list = useApi("/v1/avatars");
  const avatars = list.data ? list.data.data : [];
  const sweeping = rest && rest[0] === "sweep" && rest[1] && rest[2] ? { kind: rest[1], name: rest[2] } : null;
  const shown = avatars.filter((a) => !filter || a.kind === filter);
  const groups = KIND_NAMES.map((k) => [k, shown.filter((a) => a.kind === k)]).filter(([, items]) => items.length);
  return html`<div class="page avatars">
    <h1>Avatars</h1>
    <p class="muted">Faces, styles, poses, LoRAs and embeddings you can call from any prompt with their token,
      e.g. <code>${"<be-face:lucy:0.4>"}</code>.</p>
    ${sweeping
      ? html`<${Sweep} key=${`${sweeping.kind}/${sweeping.name}`} avatar=${
          avatars.find((a) => a.kind === sweeping.kind && a.name === sweeping.name) || sweeping
        } />`
      : null}
    <${UploadForm} onUploaded=${() => list.reload()} />
    <section aria-labelledby="avatars-title">
      <div class="bar-row">
        <h2 id="avatars-title">Your avatars</h2>
        <div class="field inline">
          <label for="avatar-filter">Show</label>
          <select id="avatar-filter" value=${filter} onChange=${(e) => setFilter(e.target.value)}>
            <option value="">All kinds</option>
            ${KIND_NAMES.map((k) => html`<option value=${k}>${KINDS[k].label}</option>`)}
          </select>
        </div>
      </div>
      <p role="status" class="muted" id="avatars-status">${status}</p>
      <${ErrorBox} error=${list.error} />
      ${list.loading && !list.data ? html`<p class="muted">Loading…</p>` : null}
      ${list.data && !shown.length
        ? html`<p class="muted">${filter ? `No ${KINDS[filter].label} avatars yet.` : "No avatars yet: add one above."}</p>`
        : null}
      ${groups.map(
        ([k, items]) => html`<section class="avatar-group" aria-label=${`${KINDS[k].label} avatars`}>
          <h3 class="group-title">${KINDS[k].label} (${items.length})</h3>
          <ul class="avatar-list">
            ${items.map(
              (a) => html`<${AvatarCard} key=${`${a.kind}/${a.name}`} avatar=${a}
                onChanged=${list.reload} onStatus=${setStatus} />`,
            )}
          </ul>
        </section>`,
      )}
    </section>
  </div>`;
}
