// Hand-offs between pages ("use these parameters", "use as init image") and the prompt history.

let pending = null;

// Generate picks these up when it opens: {params: {prompt, negative_prompt, seed, ...}, init: {name, b64}}
export function handOff(value) {
  pending = { ...(pending || {}), ...value };
  location.hash = "#/generate";
}

export function takeHandOff() {
  const value = pending;
  pending = null;
  return value;
}

const HISTORY = "pictale.prompts";

export function promptHistory() {
  try {
    return JSON.parse(localStorage.getItem(HISTORY) || "[]");
  } catch (e) {
    return [];
  }
}

export function rememberPrompt(prompt) {
  const text = (prompt || "").trim();
  if (!text) return;
  const list = [text, ...promptHistory().filter((p) => p !== text)].slice(0, 50);
  localStorage.setItem(HISTORY, JSON.stringify(list));
}
