"""The one way this project runs Docker Compose v2: `ComposeProject` builds each
`docker compose` command as a plain value (smartrelease.process.Command), tested
without Docker; `run` executes it within RELEASE_COMPOSE_TIMEOUT_S.

Compose gets the app's variables (secrets included) and the pinned images through
the process environment of that one command, never on the command line or in a
file: any character a value may hold reaches the container unchanged, since Compose
interpolates `${VAR}` in the compose file with the value as it is. Variables from
the deployment's own env file (RELEASE_COMPOSE_ENV_FILE) come second: Compose lets
the process environment win on a clash.
"""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from smartrelease.process import Command


@dataclass(frozen=True)
class ComposeProject:
    file: str
    name: str
    variables: Mapping[str, str] = field(repr=False)  # holds secrets
    env_file: str | None = None
    timeout_s: float = 600

    def _command(self, *args: str, timeout_s: float | None = None) -> Command:
        argv = ("docker", "compose", "--file", self.file, "--project-name", self.name,
                *(("--env-file", self.env_file) if self.env_file else ()), *args)
        return Command(argv, timeout_s=timeout_s or self.timeout_s, env=self.environment(),
                       name=f"docker compose {args[0]}")

    def with_variables(self, variables: Mapping[str, str]) -> "ComposeProject":
        """This project, with `variables` set over its own."""
        return replace(self, variables={**self.variables, **variables})

    def environment(self) -> dict[str, str]:
        """This process's environment (PATH, HOME, DOCKER_HOST...) without any stale
        copy of the variables, then the variables."""
        inherited = {k: v for k, v in os.environ.items() if k not in self.variables}
        return {**inherited, **{k: v for k, v in self.variables.items() if v is not None}}

    def services(self) -> Command:
        """`config --services`: the compose file's services, one per line."""
        return self._command("config", "--services", timeout_s=60)

    def config(self) -> Command:
        """`config --format json`: the compose file as Compose reads it, variables set."""
        return self._command("config", "--format", "json", timeout_s=60)

    def up(self, services: Sequence[str] = (), *, no_deps: bool = False, no_recreate: bool = False,
           force_recreate: bool = False, wait: bool = False, scale: Mapping[str, int] | None = None) -> Command:
        """`wait`: until the services run and pass their health checks. `scale`:
        service -> how many containers it runs (with `no_recreate`, the new ones are
        added beside the running ones, which keep their image)."""
        flags = {"--no-deps": no_deps, "--no-recreate": no_recreate, "--force-recreate": force_recreate, "--wait": wait}
        scaled = (a for service, n in (scale or {}).items() for a in ("--scale", f"{service}={n}"))
        return self._command("up", "--detach", "--quiet-pull", "--remove-orphans",
                             *(flag for flag, on in flags.items() if on), *scaled, *services)

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
