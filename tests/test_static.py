"""Pyflakes' checks (through ruff) over the whole tree: an undefined name, say a
variable renamed in one place and not the other, fails here instead of on the one
path that reaches it (as a lock's wait once did, in CI)."""

import ast
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
    for path in (".smartrelease-server/database-password", ".smartrelease-server/api-auth",
                 ".smartrelease-server/home/x", ".sandbox/x", ".env.sandbox"):
        ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO)
        assert ignored.returncode == 0, f"{path} is not ignored by .gitignore"
    tracked = subprocess.run(["git", "ls-files", ".smartrelease-server", ".sandbox"], capture_output=True, text=True,
                             cwd=REPO, check=True).stdout
    assert tracked == "", tracked


# The product's layers, lowest first: a module imports from its own layer or below.
# The sandbox and the benchmarks stand beside the product: they may import it, and
# nothing of the product imports them (the CLI finds the sandbox's command through an
# entry point).
LAYERS = ("core", "blocks", "tasks", "flows", "deployments", "cli")
BESIDE = ("sandbox", "benchmarks")


def _layer(module: str) -> str | None:
    top, _, rest = module.partition(".")
    if top == "smartrelease":
        return "cli" if rest.split(".")[0] == "cli" else "core"
    return top if top in LAYERS + BESIDE else None


def test_every_import_goes_down_the_layers_and_nothing_imports_the_sandbox():
    wrong = []
    product = [p for top in ("smartrelease", "blocks", "tasks", "flows", "deployments")
               for p in sorted((REPO / top).rglob("*.py"))]
    assert len(product) > 50
    for path in product:
        relative = path.relative_to(REPO)
        here = _layer(".".join(relative.with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):  # imports inside functions too
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                there = _layer(name)
                if there in BESIDE or (there in LAYERS and LAYERS.index(there) > LAYERS.index(here)):
                    wrong.append(f"{relative}:{node.lineno} ({here}) imports {name} ({there})")
    assert wrong == []
