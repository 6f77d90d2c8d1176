"""`make test`: the suite in its two phases around one registry for the whole run.

1. Every test not marked `exclusive`, on WORKERS pytest-xdist workers, each taking
   whole modules (`--dist loadfile`), on a Prefect server and sandboxes of its own.
2. The `exclusive` ones, alone: one restarts Docker Engine (which stops every
   container on the machine), the cutover module counts requests dropped under load.

Every sandbox of the run pushes to one registry, under repositories of its own: the
sandbox's base layers (about 35 s of CPU to compress and send) are pushed once per
run, not once per worker and phase. Both phases run, whatever the first one gave.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sandbox.identity import any_free_port
from sandbox.manager import Registry

REGISTRY_VARIABLE = "SMARTRELEASE_TEST_REGISTRY"  # read by tests/conftest.py's shared_registry
MODULE_ORDER_VARIABLE = "SMARTRELEASE_TEST_MODULE_ORDER"  # read by tests/conftest.py's collection hook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.suite", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3, help="pytest-xdist workers for the first phase")
    args = parser.parse_args(argv)
    pytest = [sys.executable, "-m", "pytest"]
    root = Path(tempfile.mkdtemp(prefix="smartrelease-test-registry-"))
    registry = Registry(root / "registry", f"127.0.0.1:{any_free_port()}")
    try:
        registry.start()
        env = {**os.environ, REGISTRY_VARIABLE: registry.addr, MODULE_ORDER_VARIABLE: "1"}
        # Modules go out in the order tests/conftest.py collects them (a few fast ones,
        # then the longest first), not xdist's own (the most tests first), which left a
        # long module with few tests to run alone at the end.
        phases = [[*pytest, "-n", str(args.workers), "--dist", "loadfile", "--no-loadscope-reorder",
                   "-m", "not exclusive"],
                  [*pytest, "-m", "exclusive"]]
        codes = [subprocess.run(argv, env=env).returncode for argv in phases]
    finally:
        registry.stop()
        shutil.rmtree(root, ignore_errors=True)
    if any(codes):
        print(f"make test: failed (the parallel phase exited {codes[0]}, the exclusive one {codes[1]})", file=sys.stderr)
    return next((code for code in codes if code), 0)


if __name__ == "__main__":
    sys.exit(main())
