"""Book export: HTML embeds the exact PNGs and escapes text; the PDF has one page per book page, lossless images."""

from __future__ import annotations

import base64
import io
import logging
import os
import re
from pathlib import Path

import pypdf
import pytest
from PIL import Image, PngImagePlugin

from pictale.core.errors import InvalidRequest
from pictale.story import export
from pictale.story.export import ExportBook, ExportPage, render_html, render_pdf, write_book

LONG = " ".join(f"word{i} the fox walked on through the quiet forest" for i in range(34))  # ~300 words
TEXTS = ("Zoë the naïve fox <b>bold</b> & friends.\n\nA second paragraph.", "Привет, лиса!", LONG)
SCORES = {"clip_t": 0.31, "clip_i": 0.84, "total": 0.62}


def _png(index: int) -> bytes:
    # Distinct per page: a different gradient direction and colour, so a page mix-up changes the pixels.
    img = Image.new("RGB", (64, 48 + 8 * index))
    img.putdata(
        [
            ((x * 4 + 80 * index) % 256, (y * 5) % 256, (x * y + 60 * index) % 256)
            for y in range(img.height)
            for x in range(64)
        ]
    )
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f"page {index}\nSteps: 20, Seed: {index}")  # as the A1111 writer does
    buf = io.BytesIO()
    img.save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _book(show_scores: bool = False, texts: tuple[str, ...] = TEXTS) -> ExportBook:
    pages = tuple(
        ExportPage(number=i + 1, text=t, image=_png(i), prompt=f"a fox, page {i + 1}", seed=100 + i, scores=SCORES)
        for i, t in enumerate(texts)
    )
    return ExportBook(title="Zoë & the <Forest>", pages=pages, show_scores=show_scores)


def _pixels(png: bytes) -> tuple[tuple[int, int], bytes]:
    img = Image.open(io.BytesIO(png)).convert("RGB")
    return img.size, img.tobytes()


@pytest.fixture(scope="module")
def pdf_plain() -> pypdf.PdfReader:
    return pypdf.PdfReader(io.BytesIO(render_pdf(_book())))


def test_html_sections_images_and_escaping() -> None:
    book = _book()
    doc = render_html(book)
    assert doc.startswith("<!DOCTYPE html>")
    assert re.findall(r'<section class="page" id="page-(\d+)">', doc) == ["1", "2", "3"]
    srcs = re.findall(r'src="data:image/png;base64,([^"]+)"', doc)
    assert [base64.b64decode(s) for s in srcs] == [p.image for p in book.pages]
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; friends" in doc and "<b>bold" not in doc
    assert "<h1>Zoë &amp; the &lt;Forest&gt;</h1>" in doc
    assert "Привет, лиса!" in doc and "word33" in doc
    assert doc.count("<p>") >= 4  # the blank line in page 1 keeps two paragraphs
    alts = re.findall(r'alt="([^"]*)"', doc)
    assert alts[0].startswith("Zoë the naïve fox &lt;b&gt;") and len(alts[2]) <= 120 and alts[2].endswith("…")
    assert "@page" in doc and "page-break-after" in doc
    assert "CLIP-T" not in doc and "seed 100" not in doc and "a fox, page 1" not in doc


def test_html_scores_only_on_request() -> None:
    doc = render_html(_book(show_scores=True))
    assert doc.count("CLIP-T 0.310 · CLIP-I 0.840 · total 0.620 · seed ") == 3
    assert "seed 100" in doc and "seed 102" in doc and "a fox, page 3" in doc


def test_pdf_one_page_per_book_page_with_exact_pixels(pdf_plain: pypdf.PdfReader) -> None:
    book = _book()
    assert len(pdf_plain.pages) == 1 + len(book.pages)
    assert not pdf_plain.pages[0].images  # title page
    for page, pdf_page in zip(book.pages, pdf_plain.pages[1:], strict=True):
        images = pdf_page.images
        assert len(images) == 1
        got = images[0].image.convert("RGB")
        assert (got.size, got.tobytes()) == _pixels(page.image), f"page {page.number}"


def test_pdf_text_is_unicode_and_scores_hidden(pdf_plain: pypdf.PdfReader) -> None:
    assert export._find_unicode_font() is not None, "install fonts-dejavu-core (see .ci/run)"
    texts = [p.extract_text() for p in pdf_plain.pages]
    assert "Zoë" in texts[0]
    assert "Zoë" in texts[1] and "naïve" in texts[1] and "<b>bold</b>" in texts[1]
    assert "Привет" in texts[2]
    words = texts[3].split()
    assert "word0" in words and "word33" in words  # the long page shrank its font instead of overflowing
    assert not any("CLIP-T" in t or "seed 10" in t for t in texts)


def test_pdf_scores_on_request() -> None:
    reader = pypdf.PdfReader(io.BytesIO(render_pdf(_book(show_scores=True))))
    assert len(reader.pages) == 4
    for i, page in enumerate(reader.pages[1:]):
        assert f"CLIP-T 0.310 · CLIP-I 0.840 · total 0.620 · seed {100 + i}" in page.extract_text()


def test_pdf_overlong_text_continues_and_keeps_page_order() -> None:
    huge = " ".join(["overflowing"] * 1000)
    book = _book(texts=("first", huge, "last page"))
    reader = pypdf.PdfReader(io.BytesIO(render_pdf(book)))
    assert len(reader.pages) > 4
    with_images = [i for i, p in enumerate(reader.pages) if p.images]
    assert with_images[:2] == [1, 2] and with_images[-1] == len(reader.pages) - 1
    got = reader.pages[-1].images[0].image.convert("RGB")
    assert (got.size, got.tobytes()) == _pixels(book.pages[2].image)
    assert "last page" in reader.pages[-1].extract_text()


def test_pdf_without_ttf_falls_back_to_helvetica(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setattr(export, "_find_unicode_font", lambda: None)
    with caplog.at_level(logging.WARNING, logger="pictale.story.export"):
        reader = pypdf.PdfReader(io.BytesIO(render_pdf(_book())))
    assert "no Unicode TTF font" in caplog.text
    assert len(reader.pages) == 4
    assert "Zoë" in reader.pages[1].extract_text()  # latin-1 survives
    assert "??????" in reader.pages[2].extract_text()  # Cyrillic is replaced, not a crash


def test_write_book_both_formats(tmp_path: Path) -> None:
    book = _book()
    pdf = write_book(book, tmp_path / "out" / "book.PDF")
    html_path = write_book(book, tmp_path / "out" / "book.htm")
    assert pdf.read_bytes().startswith(b"%PDF-")
    assert html_path.read_text("utf-8") == render_html(book)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["book.PDF", "book.htm"]  # no temp left


def test_write_book_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "book.html"
    target.write_text("old")

    def boom(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_book(_book(), target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["book.html"]


def test_write_book_rejects_other_suffixes(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as info:
        write_book(_book(), tmp_path / "book.docx")
    assert "'.docx'" in info.value.message and ".pdf" in info.value.message and ".html" in info.value.message
    assert not list(tmp_path.iterdir())
