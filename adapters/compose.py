"""The one way this project runs Docker Compose v2: `ComposeProject` builds each
`docker compose` command as a plain value (smartrelease.process.Command), tested
without Docker; `run` executes it within RELEASE_COMPOSE_TIMEOUT_S.

Compose gets the app's variables (secrets included) and the pinned images through
the process environment of that one command, never on the command line or in a
file: any character a value may hold reaches the container unchanged, since Compose
interpolates `${VAR}` in the compose file with the value as it is. Variables from
the deployment's own env file (RELEASE_COMPOSE_ENV_FILE) come second: Compose lets
the process environment win on a clash.

The team's compose file is never edited. An override file of this tool's own follows
it (a second `--file`, written to the state directory by the executor): it makes
each app service run the pinned image (`image: ${BACKEND_IMAGE}`) and takes away
what would build from source or stop a second container from running beside the
first (`build`, `container_name`, `pull_policy`), with Compose's `!reset` tag
(Compose 2.24 or later).
"""

import hashlib

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from smartrelease.files import state_dir
from smartrelease.process import Command

# What the override takes away from each app service: `build` (Compose would build
# from source instead of running the pinned image), `pull_policy` (`build` needs a
# `build`), `container_name` (one name allows one container: the cutover runs two).
RESET_KEYS = ("build", "pull_policy", "container_name")
MIN_COMPOSE = (2, 24)  # the first with `!reset`


def pin_override(images: Mapping[str, str]) -> str:
    """The override file for app services {service: the variable holding its pinned
    image}: YAML, the image left to Compose's interpolation (it gets the variables)."""
    lines = ["# Written by smartrelease: the app's services run the pinned images, nothing is",
             "# built from source, and a second container may start beside the first.", "services:"]
    for service, variable in images.items():
        lines += [f"  {_yaml_key(service)}:", f"    image: ${{{variable}}}",
                  *(f"    {key}: !reset null" for key in RESET_KEYS)]
    return "\n".join(lines) + "\n"


def _yaml_key(name: str) -> str:
    # A service name is [a-zA-Z0-9._-]; quoted, none can be read as another YAML type.
    return '"' + name + '"'


@dataclass(frozen=True)
class ComposeProject:
    file: str
    name: str
    variables: Mapping[str, str] = field(repr=False)  # holds secrets
    env_file: str | None = None
    timeout_s: float = 600
    override: str | None = None  # pin_override()'s text, given after the file

    def override_path(self) -> Path | None:
        """Where the override is written: named after the project and its content, so
        runs with another override never share one."""
        if self.override is None:
            return None
        digest = hashlib.sha256(self.override.encode()).hexdigest()[:12]
        return state_dir() / "compose" / f"{self.name}-{digest}.override.yml"

    def _command(self, *args: str, timeout_s: float | None = None) -> Command:
        override = self.override_path()
        argv = ("docker", "compose", "--file", self.file, *(("--file", str(override)) if override else ()),
                "--project-name", self.name, *(("--env-file", self.env_file) if self.env_file else ()), *args)
        return Command(argv, timeout_s=timeout_s or self.timeout_s, env=self.environment(),
                       name=f"docker compose {args[0]}",
                       files=((str(override), self.override),) if override else ())

    def without_override(self) -> "ComposeProject":
        """The team's compose file as it is (its own `build:` sections, for one)."""
        return replace(self, override=None)

    def with_variables(self, variables: Mapping[str, str]) -> "ComposeProject":
        """This project, with `variables` set over its own."""
        return replace(self, variables={**self.variables, **variables})

    def environment(self) -> dict[str, str]:
        """This process's environment (PATH, HOME, DOCKER_HOST...) without any stale
        copy of the variables, then the variables."""
        inherited = {k: v for k, v in os.environ.items() if k not in self.variables}
        return {**inherited, **{k: v for k, v in self.variables.items() if v is not None}}

    def version(self) -> Command:
        """`version --short`: Compose's own version, e.g. 2.26.1."""
        return Command(("docker", "compose", "version", "--short"), timeout_s=30, name="docker compose version")

    def services(self) -> Command:
        """`config --services`: the compose file's services, one per line."""
        return self._command("config", "--services", timeout_s=60)

    def config(self) -> Command:
        """`config --format json`: the compose file as Compose reads it, variables set."""
        return self._command("config", "--format", "json", timeout_s=60)

    def up(self, services: Sequence[str] = (), *, no_deps: bool = False, no_recreate: bool = False,
           force_recreate: bool = False, wait: bool = False, build: bool = False,
           scale: Mapping[str, int] | None = None) -> Command:
        """`wait`: until the services run and pass their health checks. `build`: the
        images built from the file's `build:` first (the runbook by hand). `scale`:
        service -> how many containers it runs (with `no_recreate`, the new ones are
        added beside the running ones, which keep their image)."""
        flags = {"--no-deps": no_deps, "--no-recreate": no_recreate, "--force-recreate": force_recreate, "--wait": wait,
                 "--build": build}
        scaled = (a for service, n in (scale or {}).items() for a in ("--scale", f"{service}={n}"))
        return self._command("up", "--detach", "--quiet-pull", "--remove-orphans",
                             *(flag for flag, on in flags.items() if on), *scaled, *services)

    def restart(self, services: Sequence[str], *, grace_s: int) -> Command:
        """Stop and start the same containers, not those they depend on: what resolved
        names at its start resolves them again."""
        return self._command("restart", "--no-deps", "--timeout", str(grace_s), *services, timeout_s=grace_s + 60)

    def stop(self, services: Sequence[str], *, grace_s: int) -> Command:
        # Compose gets the grace period plus time to spare for itself.
        return self._command("stop", "--timeout", str(grace_s), *services, timeout_s=grace_s + 60)

    def run(self, service: str, command: Sequence[str]) -> Command:
        """A one-off container of `service` (removed after), without its dependencies."""
        entrypoint, *args = command
        return self._command("run", "--rm", "--no-deps", "-T", "--entrypoint", entrypoint, service, *args)

    def exec(self, service: str, command: Sequence[str], *, env: Mapping[str, str] | None = None,
             timeout_s: float | None = None, name: str = "") -> Command:
        """`command` in the running container of `service`, standard input attached (no
        TTY, so bytes pass unchanged). `env` reaches it through Compose's own environment
        (`-e KEY` without a value), never the command line."""
        env = dict(env or {})
        base = self._command("exec", "-T", *(a for k in env for a in ("-e", k)), service, *command, timeout_s=timeout_s)
        return Command(base.argv, timeout_s=base.timeout_s, env={**base.env, **env},
                       name=name or f"{command[0]} (in the {service} service)")

    def down(self, *, volumes: bool = False) -> Command:
        return self._command("down", "--remove-orphans", *(("--volumes",) if volumes else ()))
