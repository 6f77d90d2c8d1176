"""Put the deployments on the Prefect server, and run an environment's worker.

`apply(environments)`: for each environment (its blocks must be saved already), its
lock, its work pool (process type) and its deployments, through Prefect's own
`prefect deploy --all` on the file `catalog.prefect_yaml` writes; the block types are
registered so the UI can show and edit them (secrets masked).

`worker_command(environment)`: `prefect worker start` on the environment's pool,
polling every `WORKER_POLL_S` seconds (Prefect's default, 10 s, leaves a triggered run
waiting about 11 s before it starts).
"""

import os
import sys
import tempfile
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

from deployments.catalog import HOME_VARIABLE, pool_name, prefect_yaml
from smartrelease.process import Command, run

PROJECT = Path(__file__).resolve().parent.parent
WORKER_POLL_S = 1
DEPLOY_TIMEOUT_S = 300


def deploy_command(prefect_file: Path, home: Path = PROJECT) -> Command:
    env = {**os.environ, HOME_VARIABLE: str(home), "PREFECT_CLI_PROMPT": "false"}
    return Command((sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file",
                    str(prefect_file)), timeout_s=DEPLOY_TIMEOUT_S, env=env, cwd=str(home), name="prefect deploy")


def worker_command(environment: str, home: Path = PROJECT) -> Command:
    env = {**os.environ, HOME_VARIABLE: str(home), "PREFECT_WORKER_QUERY_SECONDS": str(WORKER_POLL_S),
           "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
    return Command((sys.executable, "-m", "prefect", "worker", "start", "--pool", pool_name(environment),
                    "--type", "process", "--name", f"{pool_name(environment)}-{os.uname().nodename}"),
                   timeout_s=0, env=env, cwd=str(home), name="prefect worker")


def ensure_pool(environment: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool_name(environment), type="process",
                                                   description=f"Runs {environment}'s flows on its Docker host"))
        except ObjectAlreadyExists:
            pass


def register_block_types() -> None:
    """`prefect block register` of the blocks an environment is saved as."""
    from blocks import AppEnvironment, ReleaseTarget
    from blocks.registry_credentials import RegistryCredentials

    for block in (AppEnvironment, ReleaseTarget, RegistryCredentials):
        block.register_type_and_schema()


def apply(environments: list[str], home: Path = PROJECT) -> str:
    """Make each environment's lock, pool and deployments; ConfigError (nothing
    applied) when one of them has no blocks."""
    from blocks import load_environment
    from flows.lock import ensure_lock

    for environment in environments:
        load_environment(environment)  # its blocks, checked before anything is made
    for environment in environments:
        ensure_lock(environment)
        ensure_pool(environment)
    register_block_types()
    with tempfile.TemporaryDirectory(prefix="smartrelease-deploy-") as tmp:
        prefect_file = Path(tmp) / "prefect.yaml"
        prefect_file.write_text(prefect_yaml(environments))
        run(deploy_command(prefect_file, home))
    return (f"applied {len(environments) * 6} deployments for {', '.join(environments)} (pools "
            f"{', '.join(pool_name(e) for e in environments)})")


def worker_hint(environments: list[str]) -> str:
    """What to do next after `apply` on its own: nothing runs until a worker polls."""
    return "start each pool's worker on its host: " + "; ".join(f"smartrelease worker --env {e}" for e in environments)
