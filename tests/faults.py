"""Causing a fault at the right moment of a release, and what must hold after it:
shared by the faults module and the cutover module (whose test restarts Docker
Engine, and so runs with the machine to itself)."""

import os
import subprocess
import threading
import time
from pathlib import Path

import docker

from smartrelease.flows.verify import verify
from smartrelease.adapters.images import engine_answers_within
from tests.conftest import SHARED_ENV

ENV = SHARED_ENV


def project_containers(sandbox) -> set[str]:
    return {c.id for c in docker.from_env().containers.list(
        all=True, filters={"label": f"com.docker.compose.project={sandbox.settings.project}"})}


class Unchanged:
    """What must hold after a fault the release stopped at: the same containers, the
    same database, and the environment still verifies."""

    def __init__(self, sandbox):
        self.sandbox = sandbox
        self.containers, self.all = sandbox.containers(), project_containers(sandbox)
        self.database = sandbox.fingerprint()
        self.version = sandbox.env_running_version()

    def check(self) -> None:
        assert self.sandbox.containers() == self.containers
        assert project_containers(self.sandbox) == self.all  # no orphan, none gone
        assert self.sandbox.fingerprint() == self.database
        verified = verify(environment=ENV, expect_version=self.version, return_state=True)
        assert verified.is_completed(), verified.result(raise_on_failure=False).text()


def release_with_fault(sandbox, version: str, when, fault, files=None, join_s: float = 180):
    """Release `version` while a thread polls `when()` every 50 ms (errors count as
    not yet) and, the first time it is true, causes `fault()`. Returns (state,
    report, what `fault()` returned, or None when it was never caused)."""
    done, caused = threading.Event(), []

    def watch() -> None:
        deadline = time.monotonic() + 300
        while not done.is_set() and time.monotonic() < deadline:
            try:
                ready = when()
            except Exception:
                ready = False
            if ready:
                caused.append(fault())
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        state, report, _ = sandbox.release(version, files=files)
    finally:
        done.set()
        watcher.join(timeout=join_s)
    return state, report, caused[0] if caused else None




def restart_docker_engine(timeout_s: float = 120) -> float:
    """Stop dockerd (SIGTERM: it stops the containers, as a host's `systemctl restart
    docker` does without live-restore) and start it again; seconds it was away."""
    import signal

    started = time.monotonic()
    pids = [int(p) for p in subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout.split()]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    for pid in pids:
        while time.monotonic() - started < timeout_s and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
    with open("/var/log/dockerd.log", "ab") as log:
        subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    if engine_answers_within(timeout_s) is not None:
        return time.monotonic() - started
    raise AssertionError("dockerd did not come back")
