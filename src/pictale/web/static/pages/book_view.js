// One book (`#/books/ID`): its pages as they arrive (polled while the book runs), each page's candidates with
// their score bars and a Choose button, Regenerate with an edited prompt, Resume/Cancel, HTML and PDF downloads.
import { useEffect, useState } from "preact/hooks";
import { api, download } from "../lib/api.js";
import { ApiImage, ErrorBox, Field, fieldErrors, html, useApi } from "../lib/ui.js";

const RUNNING = ["queued", "running"];
const SCORES = [
  ["clip_t", "CLIP-T (text)"],
  ["clip_i", "CLIP-I (consistency)"],
  ["total", "Total"],
];
const CHOSEN_BY = { user: "chosen by you", score: "best score", first: "first candidate (no scores)" };

// A cosine score (-1 to 1) as a bar of the track's width, with its number as text.
function ScoreBars({ scores, label }) {
  if (!scores) return html`<p class="muted small-text">no scores</p>`;
  const rows = SCORES.filter(([k]) => scores[k] !== null && scores[k] !== undefined);
  return html`<dl class="scores" aria-label=${label}>
    ${rows.map(([k, name]) => {
      const v = Number(scores[k]);
      const pct = Math.max(0, Math.min(100, ((v + 1) / 2) * 100));
      return html`<div class="score">
        <dt>${name}</dt>
        <dd>
          <span class="bar-track" aria-hidden="true"><span class="bar" style=${{ width: `${pct.toFixed(1)}%` }}></span></span>
          <span class="score-value">${v.toFixed(3)}</span>
        </dd>
      </div>`;
    })}
  </dl>`;
}

function Candidates({ book, page, onBook }) {
  const [error, setError] = useState(null);
  const choose = async (index) => {
    setError(null);
    try {
      onBook(await api(`/v1/books/${book.id}/pages/${page.number}/choose`, { json: { candidate: index } }));
    } catch (err) {
      setError(err);
    }
  };
  if (!page.candidates.length) return null;
  return html`<div class="candidates">
    <h4>Candidates</h4>
    <ul class="candidate-list">
      ${page.candidates.map((c) => {
        const chosen = page.chosen === c.index;
        return html`<li class=${"candidate" + (chosen ? " chosen" : "")}>
          <${ApiImage} src=${`${c.image}?seed=${c.seed}`} alt=${`Page ${page.number}, candidate ${c.index + 1}`} class="thumb-md" />
          <p class="small-text">Candidate ${c.index + 1} · seed ${c.seed}</p>
          <${ScoreBars} scores=${c.scores} label=${`Scores of candidate ${c.index + 1}`} />
          <button type="button" class="small" aria-pressed=${chosen ? "true" : "false"} onClick=${() => choose(c.index)}>
            ${chosen ? "Chosen" : "Choose"}<span class="sr-only"> candidate ${c.index + 1} of page ${page.number}</span>
          </button>
        </li>`;
      })}
    </ul>
    ${error ? html`<${ErrorBox} error=${error} />` : null}
  </div>`;
}

function Regenerate({ book, page, onBook }) {
  const [prompt, setPrompt] = useState(page.prompt || "");
  const [seed, setSeed] = useState("");
  const [error, setError] = useState(null);
  useEffect(() => setPrompt(page.prompt || ""), [page.prompt]);
  const id = `regen-${page.number}`;
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    const json = {};
    if (prompt !== (page.prompt || "")) json.prompt = prompt;
    if (seed !== "") json.seed = Number(seed);
    try {
      onBook(await api(`/v1/books/${book.id}/pages/${page.number}/regenerate`, { json }));
    } catch (err) {
      setError(err);
    }
  };
  const errs = fieldErrors(error, ["prompt", "seed"]);
  return html`<details class="regenerate">
    <summary>Edit the prompt and regenerate<span class="sr-only"> page ${page.number}</span></summary>
    <form onSubmit=${submit}>
      <${Field} id=${`${id}-prompt`} label=${`Prompt for page ${page.number}`} error=${errs.prompt}>
        <textarea id=${`${id}-prompt`} rows="3" value=${prompt} onInput=${(e) => setPrompt(e.target.value)}></textarea>
      <//>
      <${Field} id=${`${id}-seed`} label="New seed (empty: random)" error=${errs.seed}>
        <input id=${`${id}-seed`} type="number" min="-1" value=${seed} onInput=${(e) => setSeed(e.target.value)} />
      <//>
      ${errs._ ? html`<${ErrorBox} error=${errs._} />` : null}
      <button type="submit">Regenerate<span class="sr-only"> page ${page.number}</span></button>
    </form>
  </details>`;
}

function Page({ book, page, onBook }) {
  const title = `page-${page.number}-title`;
  return html`<section class="panel book-page" aria-labelledby=${title}>
    <h3 id=${title}>Page ${page.number} <span class=${`state state-${page.state}`}>${page.state}</span></h3>
    <div class="book-page-body">
      <div class="book-page-image">
        ${page.image
          ? html`<${ApiImage} src=${`${page.image}?seed=${page.seed}`} alt=${`Page ${page.number}: ${page.text.slice(0, 100)}`} class="result" />`
          : html`<span class="img-loading" role="img" aria-label=${`Page ${page.number}: no image yet`}></span>`}
        ${page.chosen_by ? html`<p class="small-text muted">Shown: candidate ${page.chosen + 1}, ${CHOSEN_BY[page.chosen_by] || page.chosen_by}</p>` : null}
      </div>
      <div class="book-page-text">
        <p class="page-text">${page.text}</p>
        ${page.prompt ? html`<p class="small-text"><strong>Prompt:</strong> <span class="page-prompt">${page.prompt}</span></p>` : null}
        ${page.plan_error ? html`<p class="small-text muted">Prompt planner: ${page.plan_error}</p>` : null}
        ${page.reference && page.reference.used ? html`<p class="small-text muted">Drawn from ${page.reference.character}'s reference</p>` : null}
        <${ScoreBars} scores=${page.scores} label=${`Scores of page ${page.number}`} />
      </div>
    </div>
    <${Candidates} book=${book} page=${page} onBook=${onBook} />
    <${Regenerate} book=${book} page=${page} onBook=${onBook} />
  </section>`;
}

export default function BookView({ id }) {
  const loaded = useApi(`/v1/books/${id}`);
  const [book, setBook] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    if (loaded.data) setBook(loaded.data);
  }, [loaded.data]);
  const running = book && RUNNING.includes(book.state);
  // while the book runs, its pages arrive: read it again every second
  useEffect(() => {
    if (!running) return undefined;
    const t = setInterval(() => {
      api(`/v1/books/${id}`).then(setBook, (err) => setError(err));
    }, 1000);
    return () => clearInterval(t);
  }, [running, id]);
  const act = (fn) => async () => {
    setError(null);
    try {
      await fn();
    } catch (err) {
      setError(err);
    }
  };
  if (loaded.error) return html`<div class="page book"><p><a href="#/books">← Books</a></p><${ErrorBox} error=${loaded.error} /></div>`;
  if (!book) return html`<p class="muted" role="status">Loading the book…</p>`;
  const slug = (book.title || "book").replace(/[^\w-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 60) || "book";
  const finished = book.page_count > 0 && book.pages_done === book.page_count;
  return html`<div class="page book">
    <p><a href="#/books">← Books</a></p>
    <h1>${book.title}</h1>
    <p role="status" aria-live="polite" id="book-status">
      <span class=${`state state-${book.state}`}>${book.state}</span> · ${book.pages_done} of ${book.page_count || "?"} pages done
    </p>
    <progress aria-label="Pages done" max=${book.page_count || 1} value=${book.pages_done}></progress>
    ${book.error ? html`<p class="error" role="alert">The book stopped: ${book.error}</p>` : null}
    ${book.scoring !== "clip" && book.scoring ? html`<p class="muted">Scores: ${book.scoring}</p>` : null}
    <div class="actions">
      <button type="button" disabled=${!finished} onClick=${act(() => download(book.exports.html, `${slug}.html`))}>Download HTML</button>
      <button type="button" disabled=${!finished} onClick=${act(() => download(book.exports.pdf, `${slug}.pdf`))}>Download PDF</button>
      ${running
        ? html`<button type="button" class="danger" onClick=${act(async () => {
            await api(`/v1/jobs/${book.job}`, { method: "DELETE" });
            setBook(await api(`/v1/books/${id}`));
          })}>Cancel the book</button>`
        : null}
      ${book.state === "cancelled" || book.state === "failed"
        ? html`<button type="button" onClick=${act(async () => setBook(await api(`/v1/books/${id}/resume`, { method: "POST" })))}>Resume</button>`
        : null}
    </div>
    <${ErrorBox} error=${error} />
    ${book.story && book.story_source === "llm"
      ? html`<details class="story"><summary>The story the LLM wrote</summary><p class="page-text">${book.story}</p></details>`
      : null}
    ${book.pages.length === 0 && running ? html`<p class="muted">Writing the story…</p>` : null}
    ${book.pages.map((p) => html`<${Page} key=${p.number} book=${book} page=${p} onBook=${setBook} />`)}
  </div>`;
}
