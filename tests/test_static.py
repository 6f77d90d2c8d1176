"""Pyflakes' checks (through ruff) over the whole tree: an undefined name, say a
variable renamed in one place and not the other, fails here instead of on the one
path that reaches it (as a lock's wait once did, in CI)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_no_undefined_or_unused_names_anywhere():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--no-cache", "--exclude", ".venv",
                          "--output-format", "concise", str(REPO)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
