// pictale's web UI: the shell (navigation, sign-in, start-up banner); each page is a module in pages/.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, auth } from "./lib/api.js";
import { ErrorBox, html } from "./lib/ui.js";

const PAGES = [
  { id: "generate", title: "Generate" },
  { id: "gallery", title: "Gallery" },
  { id: "avatars", title: "Avatars" },
  { id: "characters", title: "Characters" },
  { id: "books", title: "Books" },
  { id: "training", title: "Training" },
  { id: "keys", title: "Keys", admin: true },
  { id: "about", title: "About" },
];

// "#/books/bk_1" -> {page: "books", rest: ["bk_1"]}
function parseHash() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const page = PAGES.some((p) => p.id === parts[0]) ? parts[0] : "generate";
  return { page, rest: parts.slice(1) };
}

function useRoute() {
  const [route, setRoute] = useState(parseHash());
  useEffect(() => {
    const on = () => setRoute(parseHash());
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return route;
}

function SignIn({ server, failed }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState(null);
  // a key that stops working (revoked) brings the form back first, then the server says it was rejected
  useEffect(() => {
    if (failed) setError("That key was not accepted. Check it and try again.");
  }, [failed]);
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    const previous = auth.key;
    auth.set(key.trim());
    try {
      await api("/v1/me");
      auth.needed = false;
      auth.set(key.trim());
    } catch (err) {
      auth.set(previous);
      setError(err.status === 401 ? "That key was not accepted. Check it and try again." : err.message);
    }
  };
  return html`<main class="signin" id="main">
    <h1>Sign in to pictale</h1>
    <p>This server needs an API key (${server ? `pictale ${server.version}` : ""}). It stays in this browser.</p>
    <form onSubmit=${submit}>
      <div class="field">
        <label for="signin-key">API key</label>
        <input id="signin-key" type="password" autocomplete="current-password" value=${key}
          aria-describedby=${error ? "signin-key-error" : undefined}
          onInput=${(e) => setKey(e.target.value)} required />
        ${error ? html`<p class="field-error" role="alert" id="signin-key-error">${error}</p>` : null}
      </div>
      <button type="submit" class="primary">Sign in</button>
    </form>
  </main>`;
}

function Page({ route, me, server }) {
  const [mod, setMod] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    setMod(null);
    setError(null);
    import(`./pages/${route.page}.js`).then(
      (m) => setMod(() => m.default),
      () => setError("This page could not be loaded. Reload to try again."),
    );
  }, [route.page]);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!mod) return html`<p class="muted" role="status">Loading…</p>`;
  const Component = mod;
  return html`<${Component} rest=${route.rest} me=${me} server=${server} />`;
}

function App() {
  const route = useRoute();
  const [server, setServer] = useState(null);
  const [me, setMe] = useState(null);
  const [state, setState] = useState("loading"); // loading | signin | rejected | ready | down
  const [tick, setTick] = useState(0);
  useEffect(() => auth.subscribe(() => setTick((t) => t + 1)), []);
  useEffect(() => {
    let live = true;
    (async () => {
      try {
        const info = await api("/v1/server");
        if (!live) return;
        setServer(info);
        if (info.auth_required && !auth.key) return setState("signin");
        const who = await api("/v1/me");
        if (!live) return;
        auth.needed = false;
        setMe(who);
        setState("ready");
      } catch (e) {
        if (!live) return;
        setMe(null);
        setState(e.status === 401 ? (auth.key ? "rejected" : "signin") : "down");
      }
    })();
    return () => {
      live = false;
    };
  }, [tick]);
  useEffect(() => {
    const page = PAGES.find((p) => p.id === route.page);
    document.title = `${page ? page.title : "pictale"} · pictale`;
  }, [route.page]);

  const signOut = () => {
    auth.set("");
    setMe(null);
  };
  const pages = PAGES.filter((p) => !p.admin || (me && me.admin));
  const notes = server ? server.notes : [];
  return html`
    <a class="skip" href="#main" onClick=${(e) => {
      e.preventDefault();
      document.getElementById("main")?.focus();
    }}>Skip to content</a>
    <header class="top">
      <a class="brand" href="#/generate">pictale</a>
      ${state === "ready"
        ? html`<nav aria-label="Pages">
            <ul>
              ${pages.map(
                (p) => html`<li><a href=${`#/${p.id}`} aria-current=${route.page === p.id ? "page" : undefined}>${p.title}</a></li>`,
              )}
            </ul>
          </nav>`
        : null}
      <div class="who">
        ${me && server && server.auth_required && state === "ready" && !auth.needed
          ? html`<span>Signed in as <strong>${me.name}</strong></span>
              <button type="button" onClick=${signOut}>Sign out</button>`
          : null}
      </div>
    </header>
    ${server && server.demo && !notes.some((n) => n.includes("demo"))
      ? html`<div class="banner" role="alert">
          Demo model: pictale is serving its tiny demo model (random weights: it draws noise). Add a real model
          with <code>--model</code> or in <code>DATA_DIR/models/Stable-diffusion/</code>.
        </div>`
      : null}
    ${notes.map((n) => html`<div class="banner" role="alert">${n}</div>`)}
    ${state === "loading" ? html`<p class="muted" role="status">Connecting…</p>` : null}
    ${state === "down" ? html`<${ErrorBox} error="The server cannot be reached. Is pictale still running?" />` : null}
    ${state === "signin" || state === "rejected" || auth.needed
      ? html`<${SignIn} server=${server} failed=${state === "rejected"} />`
      : null}
    ${state === "ready" && !auth.needed
      ? html`<main id="main" tabindex="-1"><${Page} route=${route} me=${me} server=${server} /></main>`
      : null}
  `;
}

render(html`<${App} />`, document.getElementById("app"));
