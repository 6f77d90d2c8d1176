"""`smartrelease sandbox up --server`: the sandbox's control plane, as production has it.

A Prefect server on PostgreSQL (deployments/server.py; its state under the sandbox's
directory), the sandbox's environments saved as blocks on it, their deployments
applied (one work pool per environment), and a worker per environment running here
in the background. Runs are then triggered the way people and CI trigger them: from
the UI, `smartrelease trigger`, or the `verify-<env>` schedule. `sandbox down` stops
the workers and the server; `sandbox destroy` deletes the server's database too.
"""

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.settings import temporary_settings

from smartrelease.deployments import server
from smartrelease.deployments.apply import apply, worker_command
from smartrelease.deployments.catalog import deployment_name, pool_name
from smartrelease.daemon import Background
from smartrelease.errors import ConfigError

WORKER_START_TIMEOUT_S = 90
# A Prefect 3.9 process worker does not end on SIGTERM by itself: idle, it was still
# running 3 min after one (it sends itself SIGINT and waits on). Once its flow runs
# have ended, it gets this long to note their ends, then SIGKILL (its second-signal
# behaviour too): `down` took 30 s per worker before.
WORKER_ALONE_S = 3


@dataclass(frozen=True)
class Plane:
    root: Path  # the sandbox's state directory
    server_settings: server.ServerSettings | None = None  # default: a server of the sandbox's own

    @property
    def server(self) -> server.ServerSettings:
        return self.server_settings or server.ServerSettings(state_dir=self.root / "prefect-server")

    @property
    def owns_server(self) -> bool:
        """A server kept under the sandbox's directory is the sandbox's to stop and delete;
        any other is someone else's."""
        return self.server.state_dir == self.root / "prefect-server"

    def worker(self, environment: str) -> Background:
        return Background(self.root / "workers" / f"{environment}.pid", self.root / "workers" / f"{environment}.log",
                          alone_s=WORKER_ALONE_S)

    def environments(self) -> list[str]:
        """The environments whose workers were started here."""
        directory = self.root / "workers"
        return sorted(p.stem for p in directory.glob("*.pid")) if directory.is_dir() else []


def up(plane: Plane, env_files: dict[str, Path], *, schedules: bool = True) -> list[str]:
    """Server up, each environment's blocks saved and deployments applied, a worker
    started per environment (and seen polling its pool). Without `schedules` the
    `verify/<env>` schedules are paused before any worker starts. Returns what was done."""
    from smartrelease.record.lock import import_environment

    said = [server.up(plane.server)]
    api = plane.server.api_url
    os.environ.update(server.client_environment(plane.server))  # `prefect deploy` and the workers are child processes
    with temporary_settings(updates=server.client_settings(plane.server)):
        for name, env_file in env_files.items():
            import_environment(env_file, name)
        said.append(apply(list(env_files)))
        if not schedules:
            said.append(pause_schedules(list(env_files)))
        for name in env_files:
            said.append(start_worker(plane, name))
    said.append(f"Prefect UI at {plane.server.ui_url} (log in with the contents of {plane.server.auth_file}); "
                f"for the CLI: export PREFECT_API_URL={api} SMARTRELEASE_SERVER_DIR={plane.server.state_dir}")
    return said


def pause_schedules(environments: list[str]) -> str:
    """Pause the scheduled deployments (their upcoming runs are deleted by the server)."""
    with get_client(sync_client=True) as client:
        for environment in environments:
            client.pause_deployment(client.read_deployment_by_name(deployment_name("verify", environment)).id)
    return "schedules paused: " + ", ".join(deployment_name("verify", e) for e in environments)


def start_worker(plane: Plane, environment: str) -> str:
    worker = plane.worker(environment)
    if pid := worker.pid():
        return f"worker for {pool_name(environment)} already running (pid {pid})"
    command = worker_command(environment)
    proc = worker.start(list(command.argv), env=dict(command.env), cwd=command.cwd)
    started, deadline = datetime.now(timezone.utc), time.monotonic() + WORKER_START_TIMEOUT_S
    while not _polled_since(environment, started):
        if proc.poll() is not None or time.monotonic() > deadline:
            worker.stop()
            raise ConfigError(f"the worker for {pool_name(environment)} did not start: {worker.log_tail()} "
                              f"(log: {worker.log_file})")
        time.sleep(0.5)
    return f"worker for {pool_name(environment)} polling (pid {proc.pid}, log {worker.log_file})"


def _polled_since(environment: str, since: datetime) -> bool:
    """Whether a worker has reported to the environment's pool since `since` (the server's view)."""
    with get_client(sync_client=True) as client:
        workers = client.read_workers_for_work_pool(pool_name(environment))
    return any(w.last_heartbeat_time and w.last_heartbeat_time >= since for w in workers)


def down(plane: Plane) -> list[str]:
    """Stop the workers, then the server if it is the sandbox's own (a server given
    to the plane is someone else's to stop)."""
    said = [f"worker for {pool_name(e)} stopped" for e in plane.environments() if plane.worker(e).stop()]
    if plane.owns_server and plane.server.state_dir.is_dir():
        said.append(server.down(plane.server))
    return said


def status(plane: Plane) -> dict[str, bool]:
    """Whether the server answers and each worker runs (nothing if never brought up)."""
    if not plane.server.state_dir.is_dir():
        return {}
    parts = {"server": server.answering(plane.server)}
    for environment in plane.environments():
        parts[f"worker {environment}"] = plane.worker(environment).pid() is not None
    return parts


def destroy(plane: Plane) -> None:
    down(plane)
    if plane.owns_server:
        server.destroy_database(plane.server)
