// Copy text to the clipboard: the async Clipboard API first, then the old execCommand way (inside an open
// <dialog> when there is one: the rest of the page is inert while a modal is open). Resolves true when copied.
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (e) {
    /* no permission or no secure context: try the fallback */
  }
  const host = (document.activeElement && document.activeElement.closest("dialog[open]")) || document.body;
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "sr-only";
  host.appendChild(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch (e) {
    ok = false;
  }
  area.remove();
  return ok;
}
