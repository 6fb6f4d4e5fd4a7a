// pictale's public API, called like any other client: the key (kept in this browser) goes in the
// Authorization header; errors become ApiError with the server's message and the field it names.

const KEY = "pictale.key";
const listeners = new Set();

export const auth = {
  get key() {
    return localStorage.getItem(KEY) || "";
  },
  set(key) {
    if (key) localStorage.setItem(KEY, key);
    else localStorage.removeItem(KEY);
    listeners.forEach((fn) => fn());
  },
  // fn() runs when the key changes or the server asks for one (401)
  subscribe(fn) {
    listeners.add(fn);
    return () => listeners.delete(fn);
  },
  needed: false,
};

export class ApiError extends Error {
  constructor(status, message, param, detail) {
    super(message);
    this.status = status;
    this.param = param || null;
    this.code = (detail && detail.code) || null;
    // a list of {file, problem} (training photos): each file's problem, for the page to show per file
    this.problems = detail && Array.isArray(detail.problems) ? detail.problems : null;
  }
}

function headers(extra) {
  const h = { ...(extra || {}) };
  if (auth.key) h.Authorization = `Bearer ${auth.key}`;
  return h;
}

// The message of any of pictale's error shapes (OpenAI-style, A1111-style, FastAPI validation), never a stack.
async function toError(res) {
  let message = `${res.status} ${res.statusText || "error"}`;
  let param = null;
  let detail = null;
  try {
    const body = await res.json();
    if (body.error && typeof body.error === "object") {
      message = body.error.message || message;
      param = body.error.param || null;
      detail = body.error;
    } else if (typeof body.detail === "string") {
      message = body.detail;
    } else if (Array.isArray(body.detail) && body.detail.length) {
      const d = body.detail[0];
      param = (d.loc || []).filter((x) => x !== "body").join(".") || null;
      message = d.msg || message;
    } else if (typeof body.error === "string") {
      message = body.error;
    }
  } catch (e) {
    /* not JSON: keep the status line */
  }
  if (res.status === 401) {
    auth.needed = true;
    listeners.forEach((fn) => fn());
  }
  return new ApiError(res.status, message, param, detail);
}

// api("/v1/x", {method, json, form, signal}) -> parsed JSON (or the Response for other content types)
export async function api(path, { method, json, form, signal } = {}) {
  const init = { method: method || (json || form ? "POST" : "GET"), headers: headers(), signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form) {
    init.body = form;
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "The server cannot be reached. Is pictale still running?");
  }
  if (!res.ok) throw await toError(res);
  const type = res.headers.get("content-type") || "";
  return type.includes("json") ? res.json() : res;
}

// A blob: URL for an image route (img src cannot carry the Authorization header); revoke it when done.
export async function blobUrl(path, signal) {
  const res = await api(path, { signal });
  return URL.createObjectURL(await res.blob());
}

// Save a route's bytes as a file (downloads need the key too, so no plain <a href>).
export async function download(path, filename) {
  const url = await blobUrl(path);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export function fileToBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// Server-sent events through fetch (EventSource cannot send the key). Calls onEvent({event, data, id}) for
// each event; a dropped stream reconnects with Last-Event-ID, so the server resumes where it stopped.
// Ends when an event in `until` arrives or signal aborts.
export async function follow(path, onEvent, { signal, until = ["done", "failed", "cancelled"] } = {}) {
  let lastId = null;
  for (let attempt = 0; attempt < 50; attempt++) {
    const h = headers({ Accept: "text/event-stream" });
    if (lastId !== null) h["Last-Event-ID"] = lastId;
    let res;
    try {
      res = await fetch(path, { headers: h, signal });
    } catch (e) {
      if (signal && signal.aborted) return;
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    if (!res.ok) throw await toError(res);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const ev = { event: "message", data: "", id: null };
          for (const line of block.split("\n")) {
            if (!line || line.startsWith(":")) continue;
            const i = line.indexOf(":");
            const field = i < 0 ? line : line.slice(0, i);
            const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
            if (field === "event") ev.event = val;
            else if (field === "data") ev.data += (ev.data ? "\n" : "") + val;
            else if (field === "id") ev.id = val;
          }
          if (!ev.data && ev.event === "message") continue;
          if (ev.id !== null) lastId = ev.id;
          try {
            ev.data = JSON.parse(ev.data);
          } catch (e) {
            /* plain text data */
          }
          onEvent(ev);
          if (until.includes(ev.event)) return;
        }
      }
    } catch (e) {
      if (signal && signal.aborted) return;
    }
    if (signal && signal.aborted) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new ApiError(0, "The event stream kept dropping; reload the page to follow the job.");
}
