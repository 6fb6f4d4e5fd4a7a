// Books: the key's picture books and a "New book" form (a story, or keywords an LLM turns into one;
// characters; options folded). `#/books/ID` opens one book (pages/book_view.js).
import { useState } from "preact/hooks";
import { api } from "../lib/api.js";
import { ErrorBox, Field, fieldErrors, formatTime, html, useApi } from "../lib/ui.js";
import BookView from "./book_view.js";

const DEFAULTS = {
  source: "story", // story | keywords
  text: "",
  title: "",
  characters: [],
  pages: "",
  reading_level: "age 4-6",
  style: "",
  candidates: 2,
  max_candidates: "",
  threshold: "",
  width: "",
  height: "",
  steps: "",
  cfg_scale: "",
  sampler: "",
  seed: -1,
  model: "",
  negative_prompt: "",
  clip_t_weight: 1,
  clip_i_weight: 1,
  character_references: true,
  reference_strength: 1,
};
const FIELDS = [
  "story", "keywords", "title", "characters", "pages", "reading_level", "style", "candidates", "max_candidates",
  "threshold", "width", "height", "size", "steps", "cfg_scale", "sampler", "seed", "model", "negative_prompt",
  "clip_t_weight", "clip_i_weight", "reference_strength", "length",
]; // prettier-ignore

// The BookRequest: empty fields are left out so the model's defaults apply.
function body(form) {
  const out = { [form.source]: form.text, characters: form.characters, candidates: Number(form.candidates) };
  if (form.title.trim()) out.title = form.title.trim();
  if (form.style.trim()) out.style = form.style;
  if (form.negative_prompt.trim()) out.negative_prompt = form.negative_prompt;
  if (form.source === "keywords") out.reading_level = form.reading_level;
  for (const k of ["pages", "max_candidates", "threshold", "width", "height", "steps", "cfg_scale"]) {
    if (form[k] !== "") out[k] = Number(form[k]);
  }
  if (form.sampler) out.sampler = form.sampler;
  if (form.model) out.model = form.model;
  out.seed = Number(form.seed);
  out.clip_t_weight = Number(form.clip_t_weight);
  out.clip_i_weight = Number(form.clip_i_weight);
  out.character_references = form.character_references;
  out.reference_strength = Number(form.reference_strength);
  return out;
}

function NewBook({ onMade }) {
  const [form, setForm] = useState(DEFAULTS);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const characters = useApi("/v1/characters");
  const models = useApi("/sdapi/v1/sd-models");
  const samplers = useApi("/sdapi/v1/samplers");
  const set = (k) => (e) => setForm((f) => ({ ...f, [k]: e.target.value }));
  const toggle = (name) => (e) =>
    setForm((f) => ({
      ...f,
      characters: e.target.checked ? [...f.characters, name] : f.characters.filter((n) => n !== name),
    }));

  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    setBusy(true);
    try {
      const book = await api("/v1/books", { json: body(form) });
      onMade(book);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const errs = fieldErrors(error, FIELDS);
  const textError = errs.story || errs.keywords || errs.length;
  const chars = characters.data ? characters.data.data : [];
  const num = (id, key, label, attrs = {}) => html`<${Field} id=${id} label=${label} error=${errs[key]}>
    <input id=${id} type="number" value=${form[key]} onInput=${set(key)} ...${attrs} />
  <//>`;
  return html`<form class="panel new-book" onSubmit=${submit} aria-labelledby="new-book-title">
    <h2 id="new-book-title">New book</h2>
    <fieldset class="choice">
      <legend>The text below is</legend>
      <label><input type="radio" name="book-source" value="story" checked=${form.source === "story"}
        onChange=${() => setForm((f) => ({ ...f, source: "story" }))} /> the story (a page per paragraph)</label>
      <label><input type="radio" name="book-source" value="keywords" checked=${form.source === "keywords"}
        onChange=${() => setForm((f) => ({ ...f, source: "keywords" }))} /> keywords (an LLM writes the story)</label>
    </fieldset>
    <${Field} id="book-text" label="Story or keywords" error=${textError}
      hint=${form.source === "keywords" ? "Writing from keywords needs a server started with --llm-base-url." : "Blank lines separate pages."}>
      <textarea id="book-text" rows="6" required value=${form.text} onInput=${set("text")}
        onKeyDown=${(e) => (e.ctrlKey || e.metaKey) && e.key === "Enter" && e.target.form.requestSubmit()}
        aria-describedby=${textError ? "book-text-error" : "book-text-hint"}
        placeholder=${form.source === "story" ? "Once upon a time…" : "snowman, winter, two friends"}></textarea>
    <//>
    <fieldset class="choice" aria-describedby=${errs.characters ? "book-characters-error" : undefined}>
      <legend>Characters</legend>
      ${chars.length === 0 ? html`<p class="muted">No characters yet: make them on the <a href="#/characters">Characters</a> page.</p>` : null}
      ${chars.map(
        (c) => html`<label><input type="checkbox" checked=${form.characters.includes(c.name)}
          onChange=${toggle(c.name)} /> ${c.name}</label>`,
      )}
      ${errs.characters ? html`<p class="field-error" role="alert" id="book-characters-error">${errs.characters}</p>` : null}
    </fieldset>
    <details class="options">
      <summary>Options</summary>
      <div class="grid">
        <${Field} id="book-title" label="Title" error=${errs.title}>
          <input id="book-title" value=${form.title} placeholder="from the text" onInput=${set("title")} />
        <//>
        ${num("book-pages", "pages", "Number of pages", { min: 1, max: 48, placeholder: "a page per paragraph" })}
        ${num("book-candidates", "candidates", "Candidates per page", { min: 1, max: 8 })}
        ${form.source === "keywords"
          ? html`<${Field} id="book-level" label="Reading level" error=${errs.reading_level}>
              <input id="book-level" value=${form.reading_level} onInput=${set("reading_level")} />
            <//>`
          : null}
        <${Field} id="book-style" label="Style (starts every page's prompt)" error=${errs.style} wide>
          <input id="book-style" value=${form.style} placeholder="children's book illustration, watercolor"
            onInput=${set("style")} />
        <//>
        ${num("book-width", "width", "Width", { min: 64, step: 8, placeholder: "default" })}
        ${num("book-height", "height", "Height", { min: 64, step: 8, placeholder: "default" })}
        ${num("book-steps", "steps", "Steps", { min: 1, placeholder: "default" })}
        ${num("book-cfg", "cfg_scale", "CFG scale", { min: 0, step: 0.5, placeholder: "default" })}
        ${num("book-seed", "seed", "Seed (-1: random)")}
        <${Field} id="book-sampler" label="Sampler" error=${errs.sampler}>
          <select id="book-sampler" value=${form.sampler} onChange=${set("sampler")}>
            <option value="">Model default</option>
            ${(samplers.data || []).map((s) => html`<option value=${s.name}>${s.name}</option>`)}
          </select>
        <//>
        <${Field} id="book-model" label="Model" error=${errs.model}>
          <select id="book-model" value=${form.model} onChange=${set("model")}>
            <option value="">Loaded model</option>
            ${(models.data || []).map((m) => html`<option value=${m.model_name}>${m.title}</option>`)}
          </select>
        <//>
        <${Field} id="book-negative" label="Negative prompt" error=${errs.negative_prompt} wide>
          <textarea id="book-negative" rows="2" value=${form.negative_prompt} onInput=${set("negative_prompt")}></textarea>
        <//>
        ${num("book-threshold", "threshold", "Score to reach (optional)", { min: -1, max: 1, step: 0.01, placeholder: "none" })}
        ${num("book-max", "max_candidates", "At most candidates", { min: 1, max: 32, placeholder: "candidates" })}
        ${num("book-wt", "clip_t_weight", "Weight of CLIP-T (text)", { min: 0, step: 0.1 })}
        ${num("book-wi", "clip_i_weight", "Weight of CLIP-I (consistency)", { min: 0, step: 0.1 })}
        <div class="field">
          <label><input type="checkbox" checked=${form.character_references}
            onChange=${(e) => setForm((f) => ({ ...f, character_references: e.target.checked }))} />
            Start from character references (FLUX.1 Kontext)</label>
        </div>
        ${num("book-strength", "reference_strength", "Reference strength", { min: 0.05, max: 1, step: 0.05 })}
      </div>
    </details>
    ${errs._ ? html`<${ErrorBox} error=${errs._} />` : null}
    <div class="actions">
      <button type="submit" class="primary" disabled=${busy}>Make the book</button>
    </div>
  </form>`;
}

function BookList({ version }) {
  const books = useApi(`/v1/books?v=${version}`);
  const [error, setError] = useState(null);
  const [asking, setAsking] = useState(null); // the id of the book whose Delete asks once more
  const list = books.data ? books.data.data : [];
  const remove = async (b) => {
    setAsking(null);
    setError(null);
    try {
      await api(`/v1/books/${b.id}`, { method: "DELETE" });
      books.reload();
    } catch (err) {
      setError(err);
    }
  };
  return html`<section aria-labelledby="books-title">
    <h2 id="books-title">Your books</h2>
    <${ErrorBox} error=${books.error || error} />
    ${books.data && list.length === 0 ? html`<p class="muted">No books yet.</p>` : null}
    ${list.length
      ? html`<table class="book-list">
          <thead><tr><th scope="col">Title</th><th scope="col">State</th><th scope="col">Pages</th>
            <th scope="col">Made</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
          <tbody>
            ${list.map(
              (b) => html`<tr>
                <td><a href=${`#/books/${b.id}`}>${b.title}</a></td>
                <td><span class=${`state state-${b.state}`}>${b.state}</span></td>
                <td>${b.pages_done}/${b.page_count || "?"}</td>
                <td>${formatTime(b.created)}</td>
                <td>
                  ${asking === b.id
                    ? html`<button type="button" class="small danger" onClick=${() => remove(b)}>
                          Yes, delete<span class="sr-only"> ${b.title}</span></button>
                        <button type="button" class="small" onClick=${() => setAsking(null)}>Keep it</button>`
                    : html`<button type="button" class="small danger" onClick=${() => setAsking(b.id)}>
                        Delete<span class="sr-only"> ${b.title}</span></button>`}
                </td>
              </tr>`,
            )}
          </tbody>
        </table>`
      : null}
  </section>`;
}

export default function Books({ rest }) {
  const [version, setVersion] = useState(0);
  if (rest && rest[0]) return html`<${BookView} id=${rest[0]} />`;
  return html`<div class="page books">
    <h1>Books</h1>
    <${NewBook} onMade=${(book) => {
      setVersion((v) => v + 1);
      location.hash = `#/books/${book.id}`;
    }} />
    <${BookList} version=${version} />
  </div>`;
}
