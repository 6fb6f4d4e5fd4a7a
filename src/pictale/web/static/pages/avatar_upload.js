// The avatar upload form: kind, name, files by drag and drop (or the file picker), trigger words and token
// for LoRAs and embeddings. A refused upload keeps everything typed and shows the server's message next to
// the field it concerns.
import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "../lib/api.js";
import { DropZone, ErrorBox, Field, fieldErrors, formatBytes, html } from "../lib/ui.js";
import { KIND_NAMES, KINDS } from "./avatar_kinds.js";

const FIELDS = ["kind", "name", "files", "trigger_words", "token"];
const EMPTY = { kind: "face", name: "", trigger_words: "", token: "" };

// Small previews of chosen images (blob: URLs, revoked when the list changes).
function Chosen({ files, onRemove }) {
  const [urls, setUrls] = useState([]);
  useEffect(() => {
    const made = files.map((f) => (f.type.startsWith("image/") ? URL.createObjectURL(f) : null));
    setUrls(made);
    return () => made.forEach((u) => u && URL.revokeObjectURL(u));
  }, [files]);
  if (!files.length) return null;
  return html`<ul class="chosen" aria-label="Chosen files">
    ${files.map(
      (f, i) => html`<li>
        ${urls[i] ? html`<img src=${urls[i]} alt="" class="thumb" />` : null}
        <span class="chosen-name">${f.name}</span>
        <span class="muted">${formatBytes(f.size)}</span>
        <button type="button" class="small" onClick=${() => onRemove(i)}>
          Remove<span class="sr-only"> ${f.name}</span>
        </button>
      </li>`,
    )}
  </ul>`;
}

export default function UploadForm({ onUploaded }) {
  const [form, setForm] = useState(EMPTY);
  const [files, setFiles] = useState([]);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [done, setDone] = useState("");
  const [round, setRound] = useState(0); // a new file input (showing no stale name) after upload or removal
  const nameRef = useRef(null);
  const kind = KINDS[form.kind];
  const set = (k) => (e) => setForm((f) => ({ ...f, [k]: e.target.value }));
  const clearError = (field) => setError((err) => (err && fieldErrors(err, FIELDS)[field] ? null : err));

  const addFiles = (list) => {
    setFiles((have) => (kind.multiple ? [...have, ...list] : list.slice(0, 1)));
    clearError("files");
    setDone("");
  };
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    setDone("");
    const body = new FormData();
    body.append("kind", form.kind);
    body.append("name", form.name.trim());
    if (kind.words && form.trigger_words.trim()) body.append("trigger_words", form.trigger_words);
    if (kind.token && form.token.trim()) body.append("token", form.token.trim());
    for (const f of files) body.append("files", f, f.name);
    setBusy(true);
    try {
      const made = await api("/v1/avatars", { form: body });
      setForm((f) => ({ ...EMPTY, kind: f.kind }));
      setFiles([]);
      setRound((r) => r + 1);
      setDone(`Uploaded the ${made.kind} avatar ${made.name}.`);
      onUploaded(made);
      nameRef.current?.focus();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const errs = fieldErrors(error, FIELDS);
  return html`<form class="panel upload" onSubmit=${submit} aria-labelledby="upload-title">
    <h2 id="upload-title">Add an avatar</h2>
    <div class="grid">
      <${Field} id="avatar-kind" label="Kind" error=${errs.kind}>
        <select id="avatar-kind" value=${form.kind} onChange=${(e) => {
          setForm((f) => ({ ...f, kind: e.target.value }));
          if (!KINDS[e.target.value].multiple) setFiles((have) => have.slice(0, 1));
          clearError("kind");
        }}>
          ${KIND_NAMES.map((k) => html`<option value=${k}>${KINDS[k].label}</option>`)}
        </select>
      <//>
      <${Field} id="avatar-name" label="Name" error=${errs.name}
        hint="One word: a-z, 0-9 and _ (up to 32)">
        <input id="avatar-name" ref=${nameRef} value=${form.name} autocomplete="off" spellcheck="false" required
          aria-describedby=${errs.name ? "avatar-name-error" : "avatar-name-hint"}
          aria-invalid=${errs.name ? "true" : undefined}
          onInput=${(e) => {
            set("name")(e);
            clearError("name");
          }} />
      <//>
      ${kind.words
        ? html`<${Field} id="avatar-words" label="Trigger words (comma-separated)" error=${errs.trigger_words}>
            <input id="avatar-words" value=${form.trigger_words} onInput=${set("trigger_words")}
              aria-describedby=${errs.trigger_words ? "avatar-words-error" : undefined} />
          <//>`
        : null}
      ${kind.token
        ? html`<${Field} id="avatar-token" label="Token (default: the name)" error=${errs.token}>
            <input id="avatar-token" value=${form.token} onInput=${set("token")}
              aria-describedby=${errs.token ? "avatar-token-error" : undefined} />
          <//>`
        : null}
    </div>
    <div class=${"files-field" + (errs.files ? " invalid" : "")} data-testid="avatar-files-field">
      <${DropZone}
        key=${round}
        id="avatar-files"
        label=${kind.multiple ? "Files" : "File"}
        accept=${kind.accept}
        multiple=${kind.multiple}
        onFiles=${addFiles}
        describedby=${errs.files ? "avatar-files-error" : "avatar-files-hint"}
      >
        <p class="hint" id="avatar-files-hint">Drop ${kind.what} here, or choose with the button.</p>
        <${Chosen} files=${files} onRemove=${(i) => {
          setFiles((have) => have.filter((_, j) => j !== i));
          setRound((r) => r + 1);
        }} />
        ${errs.files ? html`<p class="field-error" role="alert" id="avatar-files-error">${errs.files}</p>` : null}
      <//>
    </div>
    <div class="actions">
      <button type="submit" class="primary" disabled=${busy}>${busy ? "Uploading…" : "Upload"}</button>
      <span role="status" class="muted" id="upload-status">${done}</span>
    </div>
    ${errs._ ? html`<${ErrorBox} error=${errs._} />` : null}
  </form>`;
}
