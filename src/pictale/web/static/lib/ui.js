// Shared pieces of every page: labelled fields with their server errors, authenticated images, data loading.
import { h } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import htm from "htm";
import { api, blobUrl } from "./api.js";

export const html = htm.bind(h);

// A labelled control; `error` (a message) is shown under it with role=alert and tied by aria-describedby.
export function Field({ id, label, error, hint, children, wide }) {
  return html`<div class=${"field" + (wide ? " wide" : "")}>
    <label for=${id}>${label}</label>
    ${children}
    ${hint && !error ? html`<p class="hint" id=${id + "-hint"}>${hint}</p>` : null}
    ${error ? html`<p class="field-error" role="alert" id=${id + "-error"}>${error}</p>` : null}
  </div>`;
}

// An error from the server (or the network) as text: never a stack or an exception name.
export function ErrorBox({ error }) {
  if (!error) return null;
  const text = typeof error === "string" ? error : error.message || "Something went wrong.";
  return html`<p class="error" role="alert">${text}</p>`;
}

// An <img> of a route that needs the key: fetched as a blob, shown from a blob: URL, revoked when gone.
export function ApiImage({ src, alt, ...rest }) {
  const [url, setUrl] = useState(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    if (!src) return undefined;
    if (src.startsWith("data:") || src.startsWith("blob:")) {
      setUrl(src);
      return undefined;
    }
    const ctl = new AbortController();
    let made = null;
    setFailed(false);
    blobUrl(src, ctl.signal)
      .then((u) => {
        made = u;
        setUrl(u);
      })
      .catch((e) => {
        if (e.name !== "AbortError") setFailed(true);
      });
    return () => {
      ctl.abort();
      if (made) URL.revokeObjectURL(made);
    };
  }, [src]);
  if (failed) return html`<span class="img-missing" role="img" aria-label=${alt}>image unavailable</span>`;
  return url ? html`<img src=${url} alt=${alt} ...${rest} />` : html`<span class="img-loading" aria-label=${alt}></span>`;
}

// Load JSON from the API: {data, error, loading, reload}. `path` null skips loading.
export function useApi(path) {
  const [state, setState] = useState({ data: null, error: null, loading: !!path });
  const seq = useRef(0);
  const reload = useCallback(() => {
    if (!path) return Promise.resolve();
    const n = ++seq.current;
    setState((s) => ({ ...s, loading: true }));
    return api(path).then(
      (data) => n === seq.current && setState({ data, error: null, loading: false }),
      (error) => n === seq.current && setState({ data: null, error, loading: false }),
    );
  }, [path]);
  useEffect(() => {
    reload();
  }, [reload]);
  return { ...state, reload };
}

// Errors of a form by field: fieldErrors(err, ["name", "files"]) -> {name: "...", _: "..."} where `_` holds
// what names no field of the form.
export function fieldErrors(err, fields) {
  if (!err) return {};
  const param = (err.param || "").split(".").pop();
  if (param && fields.includes(param)) return { [param]: err.message };
  const text = (err.message || "").toLowerCase();
  const named = fields.find((f) => text.includes(`'${f}'`) || text.includes(`\`${f}\``) || text.startsWith(f + " "));
  return named ? { [named]: err.message } : { _: err.message || "Something went wrong." };
}

// Drag-and-drop (and click) zone around a file input; onFiles(FileList-like array).
export function DropZone({ id, label, accept, multiple, onFiles, children, describedby }) {
  const [over, setOver] = useState(false);
  const onDrop = (e) => {
    e.preventDefault();
    setOver(false);
    const files = [...(e.dataTransfer.files || [])];
    if (files.length) onFiles(files);
  };
  return html`<div
    class=${"dropzone" + (over ? " over" : "")}
    onDragOver=${(e) => {
      e.preventDefault();
      setOver(true);
    }}
    onDragLeave=${() => setOver(false)}
    onDrop=${onDrop}
    data-testid=${id + "-drop"}
  >
    <label for=${id}>${label}</label>
    <input
      id=${id}
      type="file"
      accept=${accept}
      multiple=${multiple}
      aria-describedby=${describedby}
      onChange=${(e) => onFiles([...e.target.files])}
    />
    ${children}
  </div>`;
}

export function formatTime(unix) {
  if (!unix) return "";
  return new Date(unix * 1000).toLocaleString();
}

export function formatBytes(n) {
  if (n == null) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}
