"""The book object of `/v1/books` (and of a finished book job's result), built from the stored book."""

from __future__ import annotations

from typing import Any


def book_view(book: dict, base_url: str, *, with_pages: bool = True) -> dict[str, Any]:
    """`{"object": "book", id, title, state, pages: [...], exports}`; image links are absolute under base_url."""
    root = f"{base_url.rstrip('/')}/v1/books/{book['id']}"
    doc = book["document"]
    req = book["request"]
    pages = doc.get("pages", [])
    out: dict[str, Any] = {
        "object": "book",
        "id": book["id"],
        "title": book["title"],
        "state": book["state"],
        "error": book["error"],
        "created": book["created"],
        "updated": book["updated"],
        "job": book["id"],
        "pages_done": sum(1 for p in pages if p.get("chosen") is not None),
        "page_count": len(pages),
        "candidates": req.get("candidates"),
        "characters": req.get("characters", []),
        "seed": req.get("seed"),
        "scoring": doc.get("scoring"),
        "character_references": doc.get("character_references"),
        "reference_strength": req.get("reference_strength"),
        "story_source": doc.get("story_source"),
    }
    if not with_pages:
        return out
    out["story"] = doc.get("story")
    out["pages"] = [_page_view(p, root) for p in pages]
    out["exports"] = {"pdf": f"{root}/export.pdf", "html": f"{root}/export.html"}
    return out


def _reference_view(ref: Any) -> dict[str, Any] | None:
    """The page's character reference (`story.references`): whose, from where (a face avatar or an earlier
    page), whether it was the init image (`used`), its strength and edit prompt when it was."""
    if not isinstance(ref, dict):
        return None
    return {k: v for k, v in ref.items() if k not in ("digest", "file")}


def _page_view(page: dict, root: str) -> dict[str, Any]:
    chosen = page.get("chosen")
    cands = page.get("candidates", [])
    number = page["number"]
    return {
        "number": number,
        "text": page["text"],
        "prompt": page.get("prompt"),
        "characters": page.get("characters", []),
        "plan_source": page.get("plan_source"),
        "plan_error": page.get("plan_error"),
        "state": "done"
        if chosen is not None
        else ("generating" if cands else "planned" if page.get("prompt") else "new"),
        "chosen": chosen,
        "chosen_by": _chosen_by(page) if chosen is not None else None,
        "image": f"{root}/pages/{number}/image" if chosen is not None else None,
        "seed": cands[chosen]["seed"] if chosen is not None else None,
        "scores": cands[chosen].get("scores") if chosen is not None else None,
        "reference": _reference_view(page.get("reference")),
        "candidates": [
            {
                "index": c["index"],
                "seed": c["seed"],
                "scores": c.get("scores"),
                "image": f"{root}/pages/{number}/candidates/{c['index']}",
            }
            for c in cands
        ],
    }


def _chosen_by(page: dict) -> str:
    """How the page's image was chosen: "user" (POST .../choose), "score" (the best total) or "first" (no
    scores). Books saved before pages recorded it were chosen by score when they had scores."""
    if page.get("chosen_by"):
        return page["chosen_by"]
    return "score" if all(c.get("scores") for c in page.get("candidates", [])) else "first"
