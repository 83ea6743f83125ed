"""The docs that are generated from the code stay current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "typer charrnn.cli utils docs --name charrnn --output docs/cli.md"


def test_cli_reference_is_current(tmp_path):
    out = tmp_path / "cli.md"
    r = subprocess.run(
        [sys.executable, "-m", "typer", "charrnn.cli", "utils", "docs", "--name", "charrnn", "--output", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    assert out.read_text() == (ROOT / "docs" / "cli.md").read_text(), f"docs/cli.md is out of date: run `{REGENERATE}`"
