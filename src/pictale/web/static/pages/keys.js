// Keys (admin keys only): the server's API keys, making one (its secret shown once) and revoking one.
// In open mode the first key must be an admin key, and once it exists the server asks every browser for a key.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, auth } from "../lib/api.js";
import { copyText } from "../lib/clipboard.js";
import { ErrorBox, Field, fieldErrors, formatTime, html, useApi } from "../lib/ui.js";

function Secret({ id, label, value }) {
  const [status, setStatus] = useState("");
  return html`<${Field} id=${id} label=${label}>
    <div class="secret-row">
      <input id=${id} type="text" readonly value=${value} class="secret" spellcheck=${false} autocomplete="off"
        onFocus=${(e) => e.target.select()} />
      <button type="button" onClick=${async () => setStatus((await copyText(value)) ? "Copied" : "Copy failed: select it and copy by hand")}>
        Copy<span class="sr-only"> ${label.toLowerCase()}</span>
      </button>
    </div>
    <p class="muted" role="status" aria-live="polite">${status}</p>
  <//>`;
}

function Created({ made, openMode, onDone }) {
  const ref = useRef(null);
  useEffect(() => ref.current?.focus(), []);
  return html`<section class="panel new-key" aria-labelledby="new-key-title">
    <h2 id="new-key-title" tabindex="-1" ref=${ref}>New key “${made.name}”${made.admin ? " (admin)" : ""}</h2>
    <p class="warning" role="alert">
      Copy this key now: it won't be shown again. pictale keeps only a hash of it.
    </p>
    <${Secret} id="new-key-secret" label="Secret key (shown once)" value=${made.key} />
    ${made.webhook_secret
      ? html`<${Secret} id="new-key-webhook" label="Webhook secret (shown once)" value=${made.webhook_secret} />`
      : null}
    ${openMode
      ? html`<p>This was the server's first key: from now on it asks every browser and client for a key.</p>
          <div class="actions">
            <button type="button" class="primary" onClick=${() => auth.set(made.key)}>Sign in with this key</button>
          </div>`
      : html`<div class="actions"><button type="button" onClick=${onDone}>Done</button></div>`}
  </section>`;
}

function KeyRow({ k, me, onRevoked }) {
  const [confirming, setConfirming] = useState(false);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const yes = useRef(null);
  useEffect(() => {
    if (confirming) yes.current?.focus();
  }, [confirming]);
  const revoke = async () => {
    setBusy(true);
    setError(null);
    try {
      await api(`/v1/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" });
      setConfirming(false);
      onRevoked(k.id);
    } catch (e) {
      setError(e);
      setConfirming(false);
    } finally {
      setBusy(false);
    }
  };
  const self = me && me.id === k.id;
  return html`<li class="key-row" data-key=${k.id}>
    <div class="key-main">
      <strong>${k.name}</strong>
      ${k.admin ? html`<span class="badge">admin</span>` : null}
      ${self ? html`<span class="badge">this browser</span>` : null}
    </div>
    <div class="key-meta muted">
      <code>${k.id}</code>
      ${k.prefix ? html`<span>starts <code>${k.prefix}…</code></span>` : null}
      <span>made ${formatTime(k.created)}</span>
      ${k.last_used ? html`<span>last used ${formatTime(k.last_used)}</span>` : null}
    </div>
    <div class="key-act">
      ${confirming
        ? html`<span>Revoke ${k.name}${self ? " (you will be signed out)" : ""}?</span>
            <button type="button" class="danger small" ref=${yes} disabled=${busy} onClick=${revoke}>
              Yes, revoke<span class="sr-only"> ${k.name}</span>
            </button>
            <button type="button" class="small" onClick=${() => setConfirming(false)}>Keep</button>`
        : html`<button type="button" class="danger small" onClick=${() => setConfirming(true)}>
            Revoke<span class="sr-only"> ${k.name}</span>
          </button>`}
    </div>
    ${error ? html`<p class="field-error key-error" role="alert">${error.message}</p>` : null}
  </li>`;
}

export default function Keys({ me, server }) {
  const admin = !!(me && me.admin);
  const openMode = !!(server && !server.auth_required);
  const keys = useApi(admin ? "/v1/keys" : null);
  const [name, setName] = useState("");
  const [isAdmin, setIsAdmin] = useState(openMode);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [made, setMade] = useState(null);
  const first = useRef(true);
  // signed in with a new key (after the first key in open mode): list again as that key
  useEffect(() => {
    if (first.current) first.current = false;
    else keys.reload();
  }, [me && me.id]);

  if (!admin) return html`<div class="page keys"><h1>Keys</h1><p>Only admin keys can manage keys.</p></div>`;
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    setBusy(true);
    try {
      const res = await api("/v1/keys", { json: { name: name.trim(), admin: isAdmin } });
      setMade({ ...res, openMode });
      setName("");
      setIsAdmin(false);
      // in open mode the server now wants a key: listing again would 401 and hide the secret
      if (!openMode) keys.reload();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const errs = fieldErrors(error, ["name", "admin"]);
  const list = keys.data ? keys.data.data : [];
  return html`<div class="page keys">
    <h1>Keys</h1>
    <p class="muted">
      Each key has its own images, jobs, avatars and books. Admin keys can also manage keys and server options.
    </p>
    ${made ? html`<${Created} made=${made} openMode=${made.openMode && openMode} onDone=${() => setMade(null)} />` : null}
    <form class="panel" onSubmit=${submit} aria-labelledby="create-title">
      <h2 id="create-title">Make a key</h2>
      ${openMode
        ? html`<p class="hint">
            This server is open (no keys yet). The first key must be an admin key; once it exists every browser
            and client needs a key.
          </p>`
        : null}
      <div class="key-form">
        <${Field} id="key-name" label="Name" error=${errs.name}>
          <input id="key-name" value=${name} maxlength="100" required placeholder="e.g. a person or a script"
            onInput=${(e) => setName(e.target.value)} />
        <//>
        <div class="field check">
          <div class="check-row">
            <input id="key-admin" type="checkbox" checked=${isAdmin} onChange=${(e) => setIsAdmin(e.target.checked)}
              aria-describedby=${errs.admin ? "key-admin-error" : undefined} />
            <label for="key-admin">Admin (can manage keys)</label>
          </div>
          ${errs.admin ? html`<p class="field-error" role="alert" id="key-admin-error">${errs.admin}</p>` : null}
        </div>
      </div>
      <div class="actions"><button type="submit" class="primary" disabled=${busy}>Make key</button></div>
      ${errs._ ? html`<${ErrorBox} error=${errs._} />` : null}
    </form>
    <section aria-labelledby="keys-title">
      <h2 id="keys-title">Keys on this server</h2>
      <${ErrorBox} error=${keys.error} />
      ${keys.loading && !keys.data ? html`<p class="muted" role="status">Loading…</p>` : null}
      ${keys.data && !list.length ? html`<p class="muted">No keys yet: the server is open to anyone who can reach it.</p>` : null}
      <ul class="key-list" aria-label="Keys">
        ${list.map((k) => html`<${KeyRow} key=${k.id} k=${k} me=${me} onRevoked=${() => keys.reload()} />`)}
      </ul>
    </section>
  </div>`;
}
