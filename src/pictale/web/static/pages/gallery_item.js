// One gallery image in a modal <dialog> (route #/gallery/ID, Esc closes): the full image, its prompt and
// parameters, and what to do with it: reuse the parameters, copy the seed, download, use as init image, delete.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, download, fileToBase64 } from "../lib/api.js";
import { copyText } from "../lib/clipboard.js";
import { formFromParameters, parameterRows } from "../lib/params.js";
import { handOff } from "../lib/store.js";
import { ApiImage, ErrorBox, html, useApi } from "../lib/ui.js";

// The parameters of an infotext as a two-column table (shared with the PNG reader).
export function ParamsTable({ parameters, infotext, label }) {
  const rows = parameterRows(parameters, infotext);
  if (!rows.length) return null;
  return html`<table class="params" aria-label=${label || "Parameters"}>
    <tbody>
      ${rows.map(([k, v]) => html`<tr><th scope="row">${k}</th><td>${v}</td></tr>`)}
    </tbody>
  </table>`;
}

// Prompt and negative prompt as a description list.
export function PromptText({ prompt, negative }) {
  return html`<dl class="prompt-text">
    <dt>Prompt</dt>
    <dd>${prompt || html`<span class="muted">(empty)</span>`}</dd>
    ${negative ? html`<dt>Negative prompt</dt><dd>${negative}</dd>` : null}
  </dl>`;
}

function Actions({ item, onDeleted }) {
  const [status, setStatus] = useState("");
  const [error, setError] = useState(null);
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState(false);
  const confirmRef = useRef(null);
  const seed = item.seed ?? (item.parameters ? item.parameters.Seed : null);
  useEffect(() => {
    if (confirming) confirmRef.current?.focus();
  }, [confirming]);

  const run = (fn) => async () => {
    setError(null);
    setStatus("");
    setBusy(true);
    try {
      await fn();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const copySeed = run(async () => {
    const ok = await copyText(String(seed));
    setStatus(ok ? `Copied seed ${seed}` : `Could not copy: the seed is ${seed}`);
  });
  const save = run(async () => {
    await download(item.image_url, `pictale-${seed ?? item.id}.png`);
    setStatus("Download started");
  });
  const useInit = run(async () => {
    const res = await api(item.image_url);
    const b64 = await fileToBase64(await res.blob());
    handOff({ init: { name: `pictale-${seed ?? item.id}.png`, b64 } });
  });
  const remove = run(async () => {
    await api(`/v1/gallery/${encodeURIComponent(item.id)}`, { method: "DELETE" });
    onDeleted(item.id);
  });

  return html`<div class="item-actions">
    <div class="actions">
      <button type="button" class="primary" onClick=${() => handOff({ params: formFromParameters(item.parameters) })}>
        Use these parameters
      </button>
      <button type="button" onClick=${copySeed} disabled=${seed == null}>Copy seed</button>
      <button type="button" onClick=${save} disabled=${busy}>Download</button>
      <button type="button" onClick=${useInit} disabled=${busy}>Use as init image</button>
      ${confirming
        ? null
        : html`<button type="button" class="danger" onClick=${() => setConfirming(true)}>Delete</button>`}
    </div>
    ${confirming
      ? html`<div class="confirm" role="group" aria-label="Confirm delete">
          <span>Delete this image for good?</span>
          <button type="button" class="danger" ref=${confirmRef} onClick=${remove} disabled=${busy}>Yes, delete</button>
          <button type="button" onClick=${() => setConfirming(false)}>Keep it</button>
        </div>`
      : null}
    <p role="status" aria-live="polite" class="muted item-status">${status}</p>
    <${ErrorBox} error=${error} />
  </div>`;
}

export default function GalleryItem({ id, onClose, onDeleted }) {
  const ref = useRef(null);
  const item = useApi(`/v1/gallery/${encodeURIComponent(id)}`);
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
  }, []);
  const data = item.data;
  const title = data ? data.prompt.slice(0, 100) || "Untitled image" : "Image";
  return html`<dialog ref=${ref} class="gallery-item" aria-labelledby="item-title" onClose=${onClose}>
    <div class="item-head">
      <h2 id="item-title">${title}</h2>
      <button type="button" class="small" onClick=${() => ref.current.close()}>Close</button>
    </div>
    ${item.loading && !data ? html`<p class="muted" role="status">Loading…</p>` : null}
    <${ErrorBox} error=${item.error} />
    ${data
      ? html`<div class="item-body">
          <div class="item-image">
            <${ApiImage} src=${data.image_url} alt=${data.prompt.slice(0, 100) || "Generated image"} class="full" />
            <p class="muted">${data.width}×${data.height} · ${new Date(data.created * 1000).toLocaleString()}</p>
          </div>
          <div class="item-info">
            <${PromptText} prompt=${data.prompt} negative=${data.negative_prompt} />
            <${ParamsTable} parameters=${data.parameters} infotext=${data.infotext} />
          </div>
        </div>
        <${Actions} item=${data} onDeleted=${onDeleted} />`
      : null}
  </dialog>`;
}
