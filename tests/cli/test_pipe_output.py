"""The CLI in a pipe (CI logs, `| tee`): progress comes as lines while it runs, and the files it writes for
the user get ordinary permissions (0o666 less the umask), not a temp file's 0o600."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys

import pytest

from pictale.cli.output import LineProgress
from pictale.storage.userfiles import write_atomically


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_line_progress_prints_the_first_step_and_each_tenth_once():
    out: list[str] = []
    bar = LineProgress(echo=out.append)
    with bar:
        task = bar.add_task("image 1", total=20)
        for step in range(21):
            bar.update(task, completed=step, description="image 1/1")
            bar.update(task, completed=step, description="image 1/1")  # polled twice: no second line
    shown = [line.split(" (")[0] for line in out]
    assert shown == [f"image 1/1: {n}/20" for n in (1, *range(2, 21, 2))]  # the first step says it started


def test_line_progress_shows_new_descriptions_and_totals():
    out: list[str] = []
    bar = LineProgress(echo=out.append)
    page = bar.add_task("page 1", total=2)
    bar.update(page, completed=0)  # nothing done yet: silent
    bar.update(page, completed=1, total=2)
    bar.update(page, completed=2, total=2, description="page 1 best 0.310")
    assert [line.split(" (")[0] for line in out] == ["page 1: 1/2", "page 1 best 0.310: 2/2"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_for_the_user_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = write_atomically(tmp_path / "sub" / "book.pdf", b"%PDF-1.4")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"%PDF-1.4"
    assert mode(path) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["book.pdf"]  # no temp file left behind


def test_generate_and_book_in_a_pipe(tmp_path, tiny_models, tiny_clip):
    """A real `pictale generate` / `pictale book` with stdout and stderr piped: lines during the run, 0o644 files."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    common = ["--model", str(tiny_models["sd15"]), "--data-dir", str(tmp_path / "data")]
    py = [sys.executable, "-c", "import os, sys, runpy; os.umask(0o022); sys.argv[0] = 'pictale'; "
          "runpy.run_module('pictale', run_name='__main__')"]  # fmt: skip
    out = tmp_path / "out"
    r = subprocess.run(
        [*py, "generate", "a fox", "--steps", "4", "--size", "64x64", "--seed", "1", "-n", "2", "-o", out, *common],
        env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    progress = [line.split(" (")[0] for line in r.stderr.splitlines() if line.startswith("image ")]
    # polled every 0.1 s, so a fast step (even a whole fast first image) may be skipped; rich's bar in a pipe
    # printed only its final frame: here every poll is a line, in order, ending at the last step
    assert progress and progress[-1] == "image 2/2: 4/4", progress
    seen = [tuple(int(n) for n in re.findall(r"\d+", line)) for line in progress]
    assert all(len(t) == 4 and t[1] == 2 and t[3] == 4 for t in seen) and seen == sorted(seen), progress
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["00000-1.png", "00001-2.png"]
    assert r.stdout.split() == [str(p) for p in pngs]
    assert all(mode(p) == 0o644 for p in pngs)

    story = tmp_path / "story.txt"
    story.write_text("A fox finds a kite.\n\nThe wind takes it over the hill.\n")
    book = tmp_path / "book.pdf"
    r = subprocess.run(
        [*py, "book", story, "-n", "2", "-o", book, "--steps", "2", "--size", "64x64", "--clip-model", tiny_clip,
         *common],
        env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    pages = [line.split(" (")[0] for line in r.stderr.splitlines() if line.startswith("page ")]
    assert pages[0].startswith("page 1") and pages[-1].startswith("page 2 best ") and pages[-1].endswith(": 2/2")
    assert book.read_bytes().startswith(b"%PDF") and mode(book) == 0o644
