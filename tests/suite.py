"""`make test`: the suite on WORKERS pytest-xdist workers around one registry for the whole run.

Each worker takes whole modules (`--dist loadfile`), in tests/conftest.py's order, on
a Prefect server and sandboxes of its own. The module marked `exclusive` comes last,
and its worker waits until every other worker has ended: it restarts Docker Engine
(which stops every container on the machine) and counts requests dropped under load.
It runs on that worker's shared sandbox, already up, instead of a session of its own
(a Prefect server and a sandbox to start: about a minute of the run).

Every sandbox of the run pushes to one registry, under repositories of its own: the
sandbox's base layers (about 35 s of CPU to compress and send) are pushed once per
run, not once per worker.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import docker

from smartrelease.sandbox.identity import any_free_port
from smartrelease.sandbox.registry import Registry
from smartrelease.adapters.images import remove_images

REGISTRY_VARIABLE = "SMARTRELEASE_TEST_REGISTRY"  # read by tests/conftest.py's shared_registry
MODULE_ORDER_VARIABLE = "SMARTRELEASE_TEST_MODULE_ORDER"  # read by tests/conftest.py's collection hook
ALONE_VARIABLE = "SMARTRELEASE_TEST_ALONE"  # read by tests/conftest.py's _alone fixture


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.suite", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3, help="pytest-xdist workers")
    args = parser.parse_args(argv)
    pytest = [sys.executable, "-m", "pytest"]
    root = Path(tempfile.mkdtemp(prefix="smartrelease-test-registry-"))
    registry = Registry(root / "registry", f"127.0.0.1:{any_free_port()}")
    (root / "alone").mkdir()
    try:
        registry.start()
        env = {**os.environ, REGISTRY_VARIABLE: registry.addr, MODULE_ORDER_VARIABLE: "1",
               ALONE_VARIABLE: str(root / "alone")}
        # Modules go out in the order tests/conftest.py collects them (a few fast ones,
        # then the longest first, the exclusive one last), not xdist's own (the most
        # tests first), which left a long module with few tests to run alone at the end.
        code = subprocess.run([*pytest, "-n", str(args.workers), "--dist", "loadfile", "--no-loadscope-reorder"],
                              env=env).returncode
    finally:
        registry.stop()
        remove_images(docker.from_env(), f"{registry.addr}/")  # what every sandbox of the run pushed
        shutil.rmtree(root, ignore_errors=True)
    if code:
        print(f"make test: failed (pytest exited {code})", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
