// The prompt box: a textarea that completes the key's avatar and character tokens after `<be-`.
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { api } from "./api.js";
import { html } from "./ui.js";

const DEFAULT_WEIGHT = { face: 0.4, style: 0.5, pose: 1, lora: 1, embedding: 1 };
const OPEN = /<\s*be-([^<>\s]*)$/i;

// Every token the key can call: [{token, label, detail}]
export async function loadTokens() {
  const [avatars, characters] = await Promise.all([api("/v1/avatars"), api("/v1/characters")]);
  const out = avatars.data.map((a) => ({
    token: `<be-${a.kind}:${a.name}:${DEFAULT_WEIGHT[a.kind] ?? 1}>`,
    label: `${a.kind}: ${a.name}`,
    detail: (a.trigger_words || []).join(", "),
  }));
  for (const c of characters.data) {
    out.push({ token: `<be-char:${c.name}>`, label: `character: ${c.name}`, detail: c.description || "" });
  }
  return out;
}

export function matchTokens(tokens, typed) {
  const t = typed.toLowerCase();
  return tokens.filter((s) => {
    const body = s.token.slice(4).toLowerCase(); // after "<be-"
    return body.startsWith(t) || body.split(":")[1].startsWith(t);
  });
}

export function PromptBox({ id, label, value, onInput, onSubmit, rows = 3, placeholder, error }) {
  const ref = useRef(null);
  const [tokens, setTokens] = useState([]);
  const [open, setOpen] = useState(null); // {start, items, active}
  useEffect(() => {
    loadTokens().then(setTokens, () => setTokens([]));
  }, []);
  // `<be-` typed before the tokens arrived: offer them as soon as they do
  useEffect(() => {
    const el = ref.current;
    if (el && tokens.length && document.activeElement === el) update(el.value, el.selectionStart);
  }, [tokens]);

  const update = (text, caret) => {
    const m = OPEN.exec(text.slice(0, caret));
    if (!m) return setOpen(null);
    const items = matchTokens(tokens, m[1]).slice(0, 12);
    setOpen(items.length ? { start: caret - m[0].length, end: caret, items, active: 0 } : null);
  };
  // the caret goes after an inserted token as soon as the new text is rendered (before the next key is
  // handled), so typing on right away continues after the token
  const caret = useRef(null);
  useLayoutEffect(() => {
    if (caret.current === null || !ref.current) return;
    ref.current.focus();
    ref.current.setSelectionRange(caret.current, caret.current);
    caret.current = null;
  }, [value]);
  const accept = (item) => {
    const after = value.slice(open.end);
    const insert = item.token + (/^\s/.test(after) ? "" : " "); // a space after it, unless one follows
    caret.current = open.start + insert.length;
    onInput(value.slice(0, open.start) + insert + after);
    setOpen(null);
  };
  const onKeyDown = (e) => {
    if (open) {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        const n = open.items.length;
        setOpen({ ...open, active: (open.active + (e.key === "ArrowDown" ? 1 : n - 1)) % n });
        return;
      }
      if (e.key === "Enter" || e.key === "Tab") {
        e.preventDefault();
        accept(open.items[open.active]);
        return;
      }
      if (e.key === "Escape") {
        e.preventDefault();
        e.stopPropagation();
        setOpen(null);
        return;
      }
    }
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && onSubmit) {
      e.preventDefault();
      onSubmit();
    }
  };
  const listId = id + "-tokens";
  return html`<div class="field wide prompt-box">
    <label for=${id}>${label}</label>
    <textarea
      id=${id}
      ref=${ref}
      rows=${rows}
      value=${value}
      placeholder=${placeholder}
      role="combobox"
      aria-autocomplete="list"
      aria-expanded=${open ? "true" : "false"}
      aria-controls=${listId}
      aria-activedescendant=${open ? `${listId}-${open.active}` : undefined}
      aria-describedby=${error ? id + "-error" : undefined}
      onInput=${(e) => {
        onInput(e.target.value);
        update(e.target.value, e.target.selectionStart);
      }}
      onKeyDown=${onKeyDown}
      onBlur=${() => setTimeout(() => setOpen(null), 150)}
    ></textarea>
    ${open
      ? html`<ul class="tokens" role="listbox" id=${listId} aria-label="Avatar and character tokens">
          ${open.items.map(
            (item, i) =>
              html`<li
                id=${`${listId}-${i}`}
                role="option"
                aria-selected=${i === open.active ? "true" : "false"}
                onMouseDown=${(e) => {
                  e.preventDefault();
                  accept(item);
                }}
              >
                <code>${item.token}</code> <span class="muted">${item.label}${item.detail ? ` · ${item.detail}` : ""}</span>
              </li>`,
          )}
        </ul>`
      : null}
    ${error ? html`<p class="field-error" role="alert" id=${id + "-error"}>${error}</p>` : null}
  </div>`;
}
