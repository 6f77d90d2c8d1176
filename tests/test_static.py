"""Pyflakes' checks (through ruff) over the whole tree: an undefined name, say a
variable renamed in one place and not the other, fails here instead of on the one
path that reaches it (as a lock's wait once did, in CI)."""

import ast
import re
import shutil
import subprocess
import zipfile
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
LAYERS = ("core", "blocks", "adapters", "record", "tasks", "flows", "deployments", "cli")
PRODUCT = ("smartrelease", "blocks", "adapters", "record", "tasks", "flows", "deployments")
BESIDE = ("sandbox", "benchmarks")


def _layer(module: str) -> str | None:
    """The layer of an installed module's name (everything is under smartrelease.*)."""
    top, _, rest = module.partition(".")
    if top != "smartrelease":
        return None
    sub = rest.split(".")[0]
    return sub if sub in LAYERS + BESIDE else "cli" if sub == "cli" else "core"


def _module(relative: Path) -> str:
    """The installed name of a file of the checkout: flows/release.py is smartrelease.flows.release."""
    parts = relative.with_suffix("").parts
    return ".".join(parts if parts[0] == "smartrelease" else ("smartrelease", *parts))


def test_every_import_goes_down_the_layers_and_nothing_imports_the_sandbox():
    wrong = []
    product = [p for top in PRODUCT for p in sorted((REPO / top).rglob("*.py"))]
    assert len(product) > 50
    for path in product:
        relative = path.relative_to(REPO)
        here = _layer(_module(relative))
        for node in ast.walk(ast.parse(path.read_text())):  # imports inside functions too
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                if name.split(".")[0] in LAYERS + BESIDE:
                    wrong.append(f"{relative}:{node.lineno} imports {name}: the installed name is smartrelease.{name}")
                there = _layer(name)
                if there in BESIDE or (there in LAYERS and LAYERS.index(there) > LAYERS.index(here)):
                    wrong.append(f"{relative}:{node.lineno} ({here}) imports {name} ({there})")
    assert wrong == []


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The product's modules a file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]  # `from pkg import module`
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


def test_no_module_of_the_product_imports_itself_through_others():
    """No cycle in the import graph (imports inside functions count: they dodged
    cycles, which is how history and journal came to import each other)."""
    files = {_module(p.relative_to(REPO)).removesuffix(".__init__"): p
             for top in PRODUCT for p in sorted((REPO / top).rglob("*.py"))}
    graph = {m: _imports(p, set(files)) - {m} for m, p in files.items()}
    cycles, done, stack = [], set(), []

    def visit(m):  # depth first: an import back into the stack closes a cycle
        stack.append(m)
        for n in sorted(graph[m]):
            if n in stack:
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in done:
                visit(n)
        stack.pop()
        done.add(m)

    for m in sorted(graph):
        if m not in done:
            visit(m)
    assert cycles == []


def test_an_install_puts_only_smartrelease_into_site_packages_and_all_of_it(tmp_path):
    """Issue 32: the design card's folders install under one namespace (setuptools'
    package-dir), never as generic top-level `tasks` or `flows`; and a package added
    without its line in pyproject.toml (tasks/backup/, say) would be left out."""
    # Built from a copy of the tree: setuptools' build/ in the repository would carry what an earlier build saw.
    tree = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.split("\0")
    source = tmp_path / "source"
    for name in filter(None, tree):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-v", "-w", str(tmp_path)],
                           check=True, capture_output=True, text=True, cwd=tmp_path)
    # setuptools still copies a package missing from `packages` (as data), and says it will stop doing so.
    absent = set(re.findall(r"Package '(smartrelease[\w.]*)' is absent from the `packages`", built.stdout + built.stderr))
    data = ("smartrelease.sandbox.app", "smartrelease.sandbox.edge")  # the sandbox's package-data: files, not code
    assert {name for name in absent if not name.startswith(data)} == set()
    [wheel] = tmp_path.glob("smartrelease-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {n.split("/")[0] for n in names} == {"smartrelease", wheel.name.split("-py3")[0] + ".dist-info"}
    sources = [p.relative_to(REPO) for top in (*PRODUCT, "sandbox") for p in (REPO / top).rglob("*.py")
               if "app" not in p.relative_to(REPO).parts[1:-1]]  # the sandbox's app is data, copied whole
    missing = [str(p) for p in sources if ("smartrelease/" + str(p).removeprefix("smartrelease/")) not in names]
    assert sources and not missing, missing
