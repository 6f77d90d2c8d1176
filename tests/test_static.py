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


def test_no_local_state_is_tracked_or_trackable():
    """The Prefect server's state directory (its database's password, its leases) and
    the sandbox's are this machine's, never the repository's: a clone carrying them
    would hand out one password and start with stale lock leases."""
    for path in (".smartrelease-server/database-password", ".smartrelease-server/home/x", ".sandbox/x", ".env.sandbox"):
        ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO)
        assert ignored.returncode == 0, f"{path} is not ignored by .gitignore"
    tracked = subprocess.run(["git", "ls-files", ".smartrelease-server", ".sandbox"], capture_output=True, text=True,
                             cwd=REPO, check=True).stdout
    assert tracked == "", tracked
