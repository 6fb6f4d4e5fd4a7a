// Gallery: every image this key made (newest first), searchable by prompt, paged with "Load more"; a thumbnail
// opens the image (#/gallery/ID) with its parameters. Drop any PNG on the page to read its parameters.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { api } from "../lib/api.js";
import { ApiImage, ErrorBox, html } from "../lib/ui.js";
import GalleryItem from "./gallery_item.js";
import { PngReader, readPng, usePageDrop } from "./png_info.js";

const PAGE = 24;

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function Thumb({ item, onOpen }) {
  return html`<li>
    <button type="button" class="gallery-thumb" data-id=${item.id} onClick=${() => onOpen(item.id)}>
      <${ApiImage} src=${item.thumbnail_url} alt="" />
      <span class="thumb-prompt">${item.prompt || "(no prompt)"}</span>
      <span class="muted thumb-seed">seed ${item.seed}</span>
    </button>
  </li>`;
}

export default function Gallery({ rest }) {
  const [text, setText] = useState(""); // what is typed in the search box
  const [q, setQ] = useState(""); // the search in effect
  const [items, setItems] = useState([]);
  const [more, setMore] = useState(false);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState(null);
  const [png, setPng] = useState(null);
  const seq = useRef(0);
  const opened = useRef(null);
  const openId = rest && rest[0];

  const load = async (query, before) => {
    const n = ++seq.current;
    setLoading(true);
    setError(null);
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (query) params.set("q", query);
    if (before) params.set("before", before);
    try {
      const page = await api(`/v1/gallery?${params}`);
      if (n !== seq.current) return;
      setItems((list) => (before ? [...list, ...page.data] : page.data));
      setMore(page.has_more);
    } catch (e) {
      if (n === seq.current) setError(e);
    } finally {
      if (n === seq.current) setLoading(false);
    }
  };
  useEffect(() => {
    load(q);
  }, [q]);
  useEffect(() => {
    const t = setTimeout(() => setQ(text.trim()), 350);
    return () => clearTimeout(t);
  }, [text]);

  const onFiles = useCallback(async (files) => {
    const file = files[0];
    setPng({ reading: true, name: file.name || "dropped image" });
    setPng(await readPng(file));
  }, []);
  const dragging = usePageDrop(onFiles);

  const open = (id) => {
    opened.current = id;
    location.hash = `#/gallery/${encodeURIComponent(id)}`;
  };
  const close = () => {
    if (location.hash.startsWith("#/gallery/")) location.hash = "#/gallery";
  };
  // back from an image: focus its thumbnail again (keyboard users keep their place)
  useEffect(() => {
    if (openId || !opened.current) return;
    document.querySelector(`.gallery-thumb[data-id="${CSS.escape(opened.current)}"]`)?.focus();
  }, [openId]);
  const deleted = (id) => {
    setItems((list) => list.filter((i) => i.id !== id));
    opened.current = null;
    close();
  };

  const status = loading
    ? "Loading…"
    : items.length === 0
      ? q
        ? `No images match “${q}”.`
        : "No images yet: everything you generate is kept here."
      : `${plural(items.length, "image")}${q ? ` matching “${q}”` : ""}${more ? ", more below" : ""}`;
  return html`<div class=${"page gallery" + (dragging ? " dragging" : "")}>
    <h1>Gallery</h1>
    <${PngReader} result=${png} onFiles=${onFiles} />
    <form class="search" role="search" onSubmit=${(e) => {
      e.preventDefault();
      setQ(text.trim());
      if (text.trim() === q) load(q);
    }}>
      <label for="gallery-q">Search prompts</label>
      <div class="search-row">
        <input id="gallery-q" type="search" value=${text} placeholder="e.g. watercolor" onInput=${(e) => setText(e.target.value)} />
        <button type="submit">Search</button>
      </div>
    </form>
    <p role="status" aria-live="polite" id="gallery-status" class="muted">${status}</p>
    <${ErrorBox} error=${error} />
    <ul class="gallery-grid" aria-label="Images">
      ${items.map((item) => html`<${Thumb} key=${item.id} item=${item} onOpen=${open} />`)}
    </ul>
    ${more
      ? html`<div class="actions">
          <button type="button" disabled=${loading} onClick=${() => load(q, items[items.length - 1].id)}>Load more</button>
        </div>`
      : null}
    ${openId ? html`<${GalleryItem} key=${openId} id=${openId} onClose=${close} onDeleted=${deleted} />` : null}
  </div>`;
}
