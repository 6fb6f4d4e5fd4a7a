"""The API and CLI packages never import the ML stack at import time (DESIGN.md rule 1)."""

from __future__ import annotations

import subprocess
import sys


def test_api_and_cli_do_not_import_torch():
    code = (
        "import sys; import pictale.api.app, pictale.cli.main, pictale.service.generation; "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'peft') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_help_is_fast_and_lists_commands():
    r = subprocess.run([sys.executable, "-m", "pictale", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    for cmd in ("serve", "generate", "models"):
        assert cmd in r.stdout
