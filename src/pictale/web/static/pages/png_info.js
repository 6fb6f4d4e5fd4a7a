// Read a PNG's generation parameters (pictale's or AUTOMATIC1111's `parameters` text chunk) through
// POST /sdapi/v1/png-info: a drop zone (and file input), the prompt and a parameters table, and reuse.
import { useEffect, useState } from "preact/hooks";
import { api, fileToBase64 } from "../lib/api.js";
import { formFromParameters } from "../lib/params.js";
import { handOff } from "../lib/store.js";
import { DropZone, html } from "../lib/ui.js";
import { ParamsTable, PromptText } from "./gallery_item.js";

// file -> {name, url, b64, info, parameters} or {name, error}
export async function readPng(file) {
  const name = file.name || "dropped image";
  try {
    const b64 = await fileToBase64(file);
    const res = await api("/sdapi/v1/png-info", { json: { image: b64 } });
    return { name, b64, url: URL.createObjectURL(file), info: res.info || "", parameters: res.parameters || {} };
  } catch (e) {
    return { name, error: e.message || "That file could not be read." };
  }
}

// `result`: null, {reading: true, name}, or what readPng returns; onFiles(files) reads the first one.
export function PngReader({ result, onFiles }) {
  useEffect(() => () => result && result.url && URL.revokeObjectURL(result.url), [result]);
  const error = result && result.error;
  return html`<section class="panel png-reader" aria-labelledby="png-title">
    <h2 id="png-title">Read a PNG's parameters</h2>
    <${DropZone}
      id="png-file"
      label="Drop a PNG to read its parameters"
      accept="image/png,image/*"
      onFiles=${onFiles}
      describedby=${error ? "png-file-error" : "png-file-hint"}
    >
      <p class="hint" id="png-file-hint">
        Drop it here, anywhere on this page, or choose a file: images from pictale or AUTOMATIC1111 carry their prompt
        and settings.
      </p>
      ${error ? html`<p class="field-error" role="alert" id="png-file-error">${result.name}: ${error}</p>` : null}
    <//>
    ${result && result.reading ? html`<p class="muted" role="status">Reading ${result.name}…</p>` : null}
    ${result && !result.reading && !error ? html`<${PngResult} result=${result} />` : null}
  </section>`;
}

function PngResult({ result }) {
  const has = !!result.info;
  return html`<section class="png-result" aria-label=${`Parameters of ${result.name}`}>
    <img src=${result.url} alt=${result.name} class="thumb" />
    <div class="png-text">
      <p class="muted">${result.name}</p>
      ${has
        ? html`<${PromptText} prompt=${result.parameters.Prompt} negative=${result.parameters["Negative prompt"]} />
            <${ParamsTable} parameters=${result.parameters} infotext=${result.info} label="PNG parameters" />
            <div class="actions">
              <button type="button" class="primary" onClick=${() => handOff({ params: formFromParameters(result.parameters) })}>
                Use these parameters
              </button>
              <button type="button" onClick=${() => handOff({ init: { name: result.name, b64: result.b64 } })}>
                Use as init image
              </button>
            </div>`
        : html`<p role="status">This PNG has no generation parameters.</p>`}
    </div>
  </section>`;
}

// Files dropped anywhere on the page (outside the drop zone, which handles its own) go to `onFiles` too.
export function usePageDrop(onFiles) {
  const [over, setOver] = useState(false);
  useEffect(() => {
    const hasFiles = (e) => e.dataTransfer && [...(e.dataTransfer.types || [])].includes("Files");
    const onOver = (e) => {
      if (!hasFiles(e) || e.defaultPrevented) return;
      e.preventDefault();
      setOver(true);
    };
    const onLeave = (e) => {
      if (!e.relatedTarget) setOver(false);
    };
    const onDrop = (e) => {
      setOver(false);
      if (e.defaultPrevented || !hasFiles(e)) return;
      e.preventDefault();
      const files = [...(e.dataTransfer.files || [])];
      if (files.length) onFiles(files);
    };
    document.addEventListener("dragover", onOver);
    document.addEventListener("dragleave", onLeave);
    document.addEventListener("drop", onDrop);
    return () => {
      document.removeEventListener("dragover", onOver);
      document.removeEventListener("dragleave", onLeave);
      document.removeEventListener("drop", onDrop);
    };
  }, [onFiles]);
  return over;
}
