"""`pictale book story.txt --character sasha -n 2 -o book.pdf`: a book made locally, a bar per page."""

from __future__ import annotations

import io

from pypdf import PdfReader
from typer.testing import CliRunner

from pictale.cli.main import app

runner = CliRunner()
STORY = "Sasha finds a kite.\n\nSasha flies the kite over the hill.\n"


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_book_command_writes_a_pdf(tmp_path, tiny_models, tiny_clip):
    data = ["--data-dir", tmp_path / "data"]
    assert run("characters", "add", "sasha", "--description", "a girl with red hair", *data).exit_code == 0
    story = tmp_path / "story.txt"
    story.write_text(STORY)
    out = tmp_path / "out" / "book.pdf"
    r = run(
        "book", story, "--character", "sasha", "-n", 2, "-o", out, "--model", tiny_models["sd15"],
        "--clip-model", tiny_clip, "--steps", 2, "--size", "64x64", "--seed", 5, "--scores", *data,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "page 1" in r.stderr and "page 2" in r.stderr and "2 pages, scoring: clip" in r.stderr
    reader = PdfReader(io.BytesIO(out.read_bytes()))
    assert len(reader.pages) == 3 and "CLIP-T" in reader.pages[1].extract_text()
    html = tmp_path / "book.html"
    r = run("book", story, "-n", 1, "-o", html, "--model", tiny_models["sd15"], "--steps", 2, "--size", "64x64", *data)
    assert r.exit_code == 0, r.output
    assert "scoring: clip" in " ".join(r.stderr.split())  # no --clip-model: the tiny CLIP pairs with a tiny model
    assert html.read_text().count('<section class="page"') == 2


def test_book_command_errors(tmp_path, tiny_models):
    story = tmp_path / "story.txt"
    story.write_text(STORY)
    r = run("book", story, "-o", tmp_path / "book.docx", "--data-dir", tmp_path)
    assert r.exit_code == 2 and "-o must end in .pdf or .html" in r.output
    r = run("book", story, "-n", 20, "--data-dir", tmp_path)
    assert r.exit_code == 2 and "candidates" in r.stderr
    r = run("book", story, "--character", "nobody", "--model", tiny_models["sd15"], "--data-dir", tmp_path)
    assert r.exit_code == 1 and "unknown character 'nobody'" in r.stderr
