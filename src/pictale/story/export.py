"""Picture-book export: one self-contained HTML file, or a PDF (fpdf2) with one PDF page per book page."""

from __future__ import annotations

import base64
import functools
import html
import io
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fpdf import FPDF
from PIL import Image, UnidentifiedImageError

from pictale.core.errors import InvalidImage, InvalidRequest
from pictale.storage.userfiles import write_atomically

logger = logging.getLogger(__name__)

SUFFIXES = (".pdf", ".html", ".htm")


@dataclass(frozen=True)
class ExportPage:
    number: int  # 1-based
    text: str
    image: bytes  # PNG bytes as generated (may carry an A1111 "parameters" chunk; embedded verbatim)
    prompt: str = ""
    seed: int | None = None
    scores: dict[str, float] | None = None  # e.g. {"clip_t": 0.31, "clip_i": 0.84, "total": 0.62}


@dataclass(frozen=True)
class ExportBook:
    title: str
    pages: tuple[ExportPage, ...]
    show_scores: bool = False  # scores, seed (and, in HTML, the prompt) are printed only on request


# ---------------------------------------------------------------------------------------------- shared


_SCORE_LABELS = {"clip_t": "CLIP-T", "clip_i": "CLIP-I", "clip_i_ref": "CLIP-I ref"}


def _scores_line(page: ExportPage) -> str:
    parts = [f"{_SCORE_LABELS.get(k, k)} {v:.3f}" for k, v in (page.scores or {}).items()]
    if page.seed is not None:
        parts.append(f"seed {page.seed}")
    return " · ".join(parts)


def _image_size(page: ExportPage) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(page.image)) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidImage(f"page {page.number}: the image cannot be decoded ({exc})", param="image") from exc


def _title(book: ExportBook) -> str:
    return book.title.strip() or "Untitled"


# ------------------------------------------------------------------------------------------------ HTML

_CSS = """
@page { size: A4; margin: 15mm; }
body { margin: 0 auto; max-width: 46rem; padding: 1rem; color: #222; line-height: 1.5;
       font-family: Georgia, "DejaVu Serif", serif; font-size: 1.2rem; }
section { page-break-after: always; break-after: page; page-break-inside: avoid; break-inside: avoid;
          margin-bottom: 3rem; }
section:last-of-type { page-break-after: auto; break-after: auto; }
.title-page { min-height: 60vh; display: flex; align-items: center; justify-content: center; text-align: center; }
.title-page h1 { font-size: 2.6rem; }
.page figure { margin: 0; }
.page img { display: block; margin: 0 auto; max-width: 100%; max-height: 70vh; width: auto; height: auto; }
.page .text p { margin: .7em 0; }
.scores { font: .75rem/1.4 monospace; color: #666; }
.prompt { font-size: .75rem; color: #666; }
.page-number { text-align: center; font-size: .8rem; color: #888; }
@media print {
  body { max-width: none; padding: 0; }
  section { margin: 0; }
  .title-page { min-height: 250mm; }
  .page img { max-height: 160mm; }
  .prompt { display: none; }
}
""".strip()

_ALT_MAX = 120


def _alt(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= _ALT_MAX:
        return flat
    cut = flat[: _ALT_MAX - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "…"


def _mime(data: bytes) -> str:
    # The planner makes PNGs, but a JPEG/WebP slipped in by a caller should still display.
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


def _paragraphs(text: str) -> str:
    paras = [p.strip() for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n").strip()) if p.strip()]
    return "\n".join(f"<p>{html.escape(p).replace(chr(10), '<br>' + chr(10))}</p>" for p in paras)


def _html_page(page: ExportPage, show_scores: bool) -> str:
    width, height = _image_size(page)
    src = f"data:{_mime(page.image)};base64,{base64.b64encode(page.image).decode('ascii')}"
    extra = ""
    if show_scores:
        line = _scores_line(page)
        if line:
            extra += f'\n<p class="scores">{html.escape(line)}</p>'
        if page.prompt:
            extra += f'\n<details class="prompt"><summary>prompt</summary>{html.escape(page.prompt)}</details>'
    return (
        f'<section class="page" id="page-{page.number}">\n'
        f'<figure><img src="{src}" alt="{html.escape(_alt(page.text))}" width="{width}" height="{height}"></figure>\n'
        f'<div class="text">\n{_paragraphs(page.text)}\n</div>{extra}\n'
        f'<p class="page-number">{page.number}</p>\n'
        "</section>"
    )


def render_html(book: ExportBook) -> str:
    """One self-contained HTML5 document: a title page, then one `<section class="page">` per book page."""
    title = html.escape(_title(book))
    sections = "\n".join(_html_page(p, book.show_scores) for p in book.pages)
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n"
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="pictale">\n'
        f"<title>{title}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
        f'<section class="title-page"><h1>{title}</h1></section>\n'
        f"{sections}\n</body>\n</html>\n"
    )


# ------------------------------------------------------------------------------------------------- PDF

# Where distributions put DejaVuSans (Debian/Ubuntu, Fedora, Arch, openSUSE, Homebrew/macOS user installs).
_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/DejaVuSans.ttf",
    "/usr/local/share/fonts/DejaVuSans.ttf",
    "/opt/homebrew/share/fonts/DejaVuSans.ttf",
    "~/Library/Fonts/DejaVuSans.ttf",
    "/Library/Fonts/DejaVuSans.ttf",
)
_FONT_SUFFIXES = (".ttf", ".otf")


def _fc(*args: str) -> list[str]:
    """Output lines of a fontconfig tool, or [] when fontconfig is absent or fails."""
    exe = shutil.which(args[0])
    if exe is None:
        return []
    try:
        done = subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


@functools.lru_cache(maxsize=1)
def _find_unicode_font() -> Path | None:
    """A TrueType/OpenType font with wide Unicode coverage: DejaVuSans if present, else fontconfig's sans."""
    for candidate in _FONT_CANDIDATES:
        path = Path(candidate).expanduser()
        if path.is_file():
            return path
    # fc-match always answers with *some* font; any TTF/OTF beats Helvetica's latin-1.
    for line in _fc("fc-match", "-f", "%{file}\n", "DejaVu Sans:style=Book"):
        path = Path(line.strip())
        if path.suffix.lower() in _FONT_SUFFIXES and path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=64)
def _font_with(char: str) -> tuple[str, int] | None:
    """(file, collection index) of an installed font that has `char` (e.g. a CJK font), via fc-list."""
    for line in sorted(_fc("fc-list", "-f", "%{file}\t%{index}\n", f":charset={ord(char):x}")):
        file, _, index = line.partition("\t")
        if Path(file).suffix.lower() in (*_FONT_SUFFIXES, ".ttc") and Path(file).is_file():
            return file, int(index or 0)
    return None


_MARGIN = 18.0  # mm
_GAP = 6.0  # between picture and text
_IMAGE_SHARE = 0.58  # the picture takes at most this share of the usable height...
_IMAGE_MIN_SHARE = 0.25  # ...and gives room to long text down to this share
_TEXT_SIZES = tuple(range(16, 8, -1))  # pt; a long page shrinks its text down to the last size
_SCORES_SIZE = 8


def _line_height(size_pt: float) -> float:
    return size_pt * 0.3528 * 1.35  # pt -> mm, with a comfortable leading


class _BookPDF:
    """Holds the FPDF document and whether it writes with a Unicode TTF or the latin-1 core font."""

    def __init__(self, book: ExportBook) -> None:
        self.pdf = FPDF(format="A4", unit="mm")
        self.pdf.set_margins(_MARGIN, _MARGIN, _MARGIN)
        self.pdf.set_auto_page_break(True, margin=_MARGIN)
        self.pdf.set_title(_title(book))
        self.pdf.set_creator("pictale")
        font = _find_unicode_font()
        if font is None:
            logger.warning(
                "no Unicode TTF font found (looked for DejaVuSans.ttf and asked fc-match); the PDF uses Helvetica "
                "and characters outside latin-1 print as '?'. Install fonts-dejavu-core to fix this."
            )
            self.family, self.unicode = "helvetica", False
            return
        self.family, self.unicode = "book", True
        self.pdf.add_font(self.family, "", str(font))
        self._add_fallbacks(book)

    def _add_fallbacks(self, book: ExportBook) -> None:
        # DejaVu has no CJK; let fpdf2 borrow such glyphs from another installed font when one exists.
        chars = set(book.title).union(*(p.text for p in book.pages))
        cmap = self.pdf.fonts[self.family].cmap
        missing = sorted(c for c in chars if not c.isspace() and ord(c) not in cmap)
        names: list[str] = []
        for char in missing:
            if any(ord(char) in self.pdf.fonts[n].cmap for n in names):
                continue
            found = _font_with(char)
            if found is None or len(names) >= 4:
                continue
            name = f"fallback{len(names)}"
            try:
                self.pdf.add_font(name, "", found[0], collection_font_number=found[1])
            except Exception as exc:  # a broken system font must not break the export
                logger.warning("cannot use fallback font %s: %s", found[0], exc)
                continue
            names.append(name)
        if names:
            self.pdf.set_fallback_fonts(names)

    def text(self, value: str) -> str:
        return value if self.unicode else value.encode("latin-1", "replace").decode("latin-1")

    def font(self, size: float) -> None:
        self.pdf.set_font(self.family, size=size)

    def text_height(self, value: str, size: float) -> float:
        self.font(size)
        lines = self.pdf.multi_cell(0, _line_height(size), self.text(value), dry_run=True, output="LINES")
        return len(lines) * _line_height(size)


def _fit(width: int, height: int, box_w: float, box_h: float) -> tuple[float, float]:
    scale = min(box_w / width, box_h / height)
    return width * scale, height * scale


def _pdf_title_page(doc: _BookPDF, book: ExportBook) -> None:
    pdf = doc.pdf
    pdf.add_page()
    pdf.set_y(pdf.h * 0.33)
    doc.font(30)
    pdf.multi_cell(0, _line_height(30), doc.text(_title(book)), align="C", new_x="LMARGIN", new_y="NEXT")


def _pdf_page(doc: _BookPDF, page: ExportPage, show_scores: bool) -> None:
    pdf = doc.pdf
    pdf.add_page()
    usable_w, usable_h = pdf.epw, pdf.eph
    scores = _scores_line(page) if show_scores else ""
    scores_h = _line_height(_SCORES_SIZE) + 2 if scores else 0.0
    text = page.text.replace("\r\n", "\n").strip()
    img_w, img_h = _fit(*_image_size(page), usable_w, usable_h * _IMAGE_SHARE)

    # Largest text size that fits under the full-size picture; if none does, shrink the picture instead.
    size = _TEXT_SIZES[-1]
    text_h = 0.0
    if text:
        for candidate in _TEXT_SIZES:
            text_h = doc.text_height(text, candidate)
            size = candidate
            if img_h + _GAP + text_h + scores_h <= usable_h:
                break
        else:
            room = max(usable_h - _GAP - text_h - scores_h, usable_h * _IMAGE_MIN_SHARE)
            img_w, img_h = _fit(*_image_size(page), usable_w, min(img_h, room))
            # Still too long: fpdf2's auto page break carries the rest onto a continuation page.

    pdf.image(io.BytesIO(page.image), x=pdf.l_margin + (usable_w - img_w) / 2, y=pdf.t_margin, w=img_w, h=img_h)
    pdf.set_xy(pdf.l_margin, pdf.t_margin + img_h + _GAP)
    if text:
        doc.font(size)
        pdf.multi_cell(0, _line_height(size), doc.text(text), align="L", new_x="LMARGIN", new_y="NEXT")
    if scores:
        pdf.ln(2)
        doc.font(_SCORES_SIZE)
        pdf.set_text_color(110)
        pdf.multi_cell(0, _line_height(_SCORES_SIZE), doc.text(scores), align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0)


def render_pdf(book: ExportBook) -> bytes:
    """A4 PDF: a title page, then one page per book page (n book pages -> n+1 PDF pages).

    Only text too long even at the smallest size under a shrunken picture continues onto an extra page.
    """
    doc = _BookPDF(book)
    _pdf_title_page(doc, book)
    for page in book.pages:
        _pdf_page(doc, page, book.show_scores)
    return bytes(doc.pdf.output())


# ----------------------------------------------------------------------------------------------- files


def write_book(book: ExportBook, path: Path) -> Path:
    """Write the book as PDF or HTML, chosen by the suffix of `path` (.pdf, .html, .htm); returns `path`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        data = render_pdf(book)
    elif suffix in (".html", ".htm"):
        data = render_html(book).encode("utf-8")
    else:
        shown = repr(path.suffix) if path.suffix else "no suffix"
        raise InvalidRequest(
            f"cannot export a book to {shown} ({path.name}): use one of {', '.join(SUFFIXES)}", param="path"
        )
    write_atomically(path, data)
    return path
