"""The one way this project runs Docker Compose (v2, through python-on-whales).

Compose reads its variables (image tags, secrets) from a 0600 env file that exists
only while the command runs: secrets never go on a command line or into a log.
"""

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from python_on_whales import DockerClient

from smartrelease.errors import ConfigError


def _env_line(key: str, value: str) -> str:
    # Single quotes are literal in Compose env files (no `$` interpolation); a value
    # holding a quote or a newline cannot be written safely, so it is refused.
    if "'" in value or "\n" in value:
        raise ConfigError(f"{key} contains a single quote or a newline, which Compose env files cannot carry")
    return f"{key}='{value}'\n"


@contextmanager
def compose(compose_file: str, project: str, variables: Mapping[str, str],
            extra_env_file: str | None = None) -> Iterator[DockerClient]:
    """`extra_env_file` holds the deployment's non-secret variables (ports, proxy
    image); `variables` are written after it, so they win on a clash."""
    fd, path = tempfile.mkstemp(prefix="smartrelease-compose-", suffix=".env")
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.writelines(_env_line(k, v) for k, v in variables.items() if v is not None)
        yield DockerClient(compose_files=[compose_file], compose_project_name=project, compose_env_files=[*([extra_env_file] if extra_env_file else []), path])
    finally:
        os.unlink(path)
