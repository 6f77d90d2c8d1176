"""What the environment's compose file must be for a release to do what it says,
read from Compose itself (`docker compose config --format json`, every file, env_file
and interpolation resolved) and refused in preflight's `environment` check, before
anything changes. One line per problem: the service, the cause, the fix.

What the tool's override file (adapters/compose.py) mends is not a problem: `build:`
without `image:`, an image of the file's own, `container_name`. The team's file is
read as it is, once, with probe values for the variables this tool passes (the
migration guard, the metrics credentials): a service that does not end up with
exactly the probe value gets it from somewhere else (a literal, an `env_file:`), out
of this tool's reach.
"""

import posixpath
import re
from pathlib import Path

from smartrelease.blocks.app_contract import ROLES
from smartrelease.blocks.envfile import Environment
from smartrelease.errors import CommandFailed
from smartrelease.process import run
from smartrelease.tasks.build_recipe import recipe_problems
from smartrelease.adapters.compose import MIN_COMPOSE
from smartrelease.tasks.edge_class import edge_of
from smartrelease.tasks.launch import project_compose, team_config

PROBE = "smartrelease-probe"
# Passed by this tool to the backend (docs/configuration.md, "The app's variables"): `smartrelease
# guard` and the metrics step rely on the container getting these values.
REACHED = ("ALLOW_PROD_MIGRATIONS", "METRICS_BASIC_AUTH_USER", "METRICS_BASIC_AUTH_PASS")


def cannot_run_twice(config: dict, services: list[str]) -> dict[str, str]:
    """The services of `services` that two containers cannot run at once, as the
    cutover does, and why (a `container_name` is the override's to take away)."""
    found = {}
    for name in services:
        service = (config.get("services") or {}).get(name) or {}
        if published := [p.get("published") for p in service.get("ports") or [] if p.get("published")]:
            found[name] = f"publishes host port(s) {', '.join(map(str, published))}"
        elif service.get("network_mode") == "host":
            found[name] = "uses network_mode: host"
    return found


def stop_first_services(env: Environment, config: dict | None = None) -> dict[str, str]:
    """The app services a release stops before starting their new container, and why
    (nothing when the compose file cannot be read: preflight names that). `config`:
    the team's compose file as team_config() reads it, when already read."""
    return stop_first_with_downtime(env, config)[0]


def stop_first_with_downtime(env: Environment, config: dict | None = None) -> tuple[dict[str, str], dict[str, float]]:
    """`stop_first_services`, and for each the seconds users get errors, about (`downtime_s`)."""
    if config is None:
        try:
            config = team_config(env)
        except CommandFailed:
            return {}, {}
    app = [env.target.backend_service, env.target.frontend_service]
    found = cannot_run_twice(config, app)
    edge = edge_of(env, config)
    if edge.kind == "static":
        for name in app:
            found.setdefault(name, "the edge resolved its address once, at its start: it is restarted after")
    services = config.get("services") or {}
    return found, {name: downtime_s(services[name], probed=edge.kind != "discovery") for name in found if name in services}


# Go's duration text, as `docker compose config` writes a health check's interval: 1m30s, 2s, 500ms.
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNIT_S = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
DOCKER_DEFAULT_INTERVAL_S = 30.0
STOP_S = 1.0  # an app that ends on SIGTERM; a slow one takes up to RELEASE_DRAIN_S


def duration_s(text: str) -> float | None:
    parts = _DURATION.findall(text or "")
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def downtime_s(service: dict, probed: bool = False) -> float:
    """How long a service stopped first gives errors, about: its stop, then its new
    container's first health check, which Docker runs one interval after the start (the
    cutover waits for it). With no health check in the compose file, or when the
    cutover probes each new container itself (`probed`: an edge that reads no health
    status), the stop alone: an image's own HEALTHCHECK is not in the file, so it is
    not counted."""
    check = service.get("healthcheck") or {}
    if probed or not check or check.get("disable") or check.get("test") in (["NONE"], "NONE"):
        return STOP_S
    return STOP_S + (duration_s(check.get("interval") or "") or DOCKER_DEFAULT_INTERVAL_S)


def missing_services(config: dict, env: Environment) -> list[str]:
    services = config.get("services") or {}
    return [f"{env.target.service(role)} is not a service of the compose file (RELEASE_{role.upper()}_SERVICE)"
            for role in ROLES if env.target.service(role) not in services]


def compose_version_problems(version: str) -> list[str]:
    """The override file needs Compose's `!reset` tag."""
    try:
        found = tuple(int(part) for part in version.strip().lstrip("v").split("-")[0].split(".")[:2])
    except ValueError:
        return [f"Docker Compose answered its version as {version.strip()[:40]!r}, not a version number"]
    if found < MIN_COMPOSE:
        return [f"Docker Compose {version.strip()} is too old: this tool's override file needs "
                f"{'.'.join(map(str, MIN_COMPOSE))} or later (its `!reset` tag); upgrade docker-compose-plugin"]
    return []


def reach_problems(config: dict, service_name: str) -> list[str]:
    """Variables this tool passes that the service gets from somewhere else."""
    environment = ((config.get("services") or {}).get(service_name) or {}).get("environment") or {}
    return [f"{service_name} gets {key} from the compose file itself (a literal or an env_file), not from this tool, "
            f"so `smartrelease guard` and the release's settings cannot change it: pass it as "
            f"`{key}: ${{{key}}}` in its environment"
            for key in REACHED if key in environment and environment[key] != PROBE]


def mount_problems(config: dict, service_name: str, migrations_dir: str) -> list[str]:
    """A bind mount over the image's migrations: the migrations that run would be the
    host's files, not the image's, which the guard, the plan and the undo read."""
    problems = []
    for volume in ((config.get("services") or {}).get(service_name) or {}).get("volumes") or []:
        target = posixpath.normpath(volume.get("target") or "")
        inside = posixpath.normpath(migrations_dir)
        if volume.get("type") == "bind" and (inside == target or inside.startswith(target.rstrip("/") + "/")
                                             or target.startswith(inside + "/")):
            problems.append(f"{service_name} mounts {volume.get('source')} over {target}, where its image holds the "
                            f"migrations (RELEASE_MIGRATIONS_DIR {migrations_dir}): the migrations that run would be "
                            "the host's, not the image's the guard, the plan and the undo read; remove the mount")
    return problems


# A frontend that resolves the backend's name once, at its start (docs/zero-downtime.md):
# the one started beside the old backend keeps that backend's address until it is
# replaced in turn, and what it sends there waits on nothing until it gives up. Measured
# (2026-12-06, 4 releases each under load): with nginx's default 60 s, waits of 1 to
# 3.5 s here and over 10 s (requests lost) in 2 of 6 runs before; with 1 s, at most
# 2.0 s and nothing lost.
FAILS_FAST_S = 1.0
PINNED_FRONTEND_RISK = ("the frontend resolves the backend once, at its start, so the one started beside the old "
                        "backend keeps its address after it has gone, and a request sent there waits until the "
                        "frontend gives up on it (RELEASE_FRONTEND_CONNECT_TIMEOUT_S: {timeout}) before it reaches the "
                        "new backend: some users may get errors for a few seconds after the old backend stops")
PINNED_FRONTEND_FIX = ("have the frontend give up on an address that does not answer within a second (nginx: "
                       "`proxy_connect_timeout 1s;`, which tries the next address) and set "
                       "RELEASE_FRONTEND_CONNECT_TIMEOUT_S=1 (docs/zero-downtime.md)")


def pinned_frontend_risk(env: Environment) -> str | None:
    """What users may see of a release because the frontend resolves the backend once
    (RELEASE_FRONTEND_PINS_BACKEND); None when nothing, or when it gives up on a gone
    address within FAILS_FAST_S (a wait of about twice that, measured, and no error)."""
    t = env.target
    if not t.frontend_pins_backend or (t.frontend_connect_timeout_s or 60) <= FAILS_FAST_S:
        return None
    timeout = f"{t.frontend_connect_timeout_s:g} s" if t.frontend_connect_timeout_s else "unset, nginx's 60 s assumed"
    return PINNED_FRONTEND_RISK.format(timeout=timeout)


def compose_problems(env: Environment) -> list[str]:
    """Every problem of the environment's compose file, one line each (nothing when the
    file does not exist yet: the steps that use it say so)."""
    t = env.target
    if not (t.compose_file and t.compose_project and Path(t.compose_file).is_file()):
        return []
    try:
        if old := compose_version_problems(run(project_compose(env).version()).stdout):
            return old
        config = team_config(env, {k: PROBE for k in REACHED})
    except CommandFailed as exc:
        return [f"the compose file cannot be read: {exc}"]
    problems = []
    if t.zero_downtime == "required" and (twice := cannot_run_twice(config, [t.backend_service, t.frontend_service])):
        problems.append(f"{t.compose_file}: " + "; ".join(f"{name} {why}" for name, why in twice.items())
                        + ": it cannot run twice at once, so a release would stop it first and users would get errors "
                        "(RELEASE_ZERO_DOWNTIME=required): publish ports from the edge only, which routes by service "
                        "name (docs/cutover.md)")
    if t.zero_downtime == "required" and (edge := edge_of(env, config)).kind == "static":
        problems.append(f"{edge.line()}: it resolved the app's addresses once, at its start, and sees no new "
                        "container, so a release would stop the app first and users would get errors "
                        "(RELEASE_ZERO_DOWNTIME=required): let the edge resolve the names as it goes (nginx: a "
                        "`resolver` and the upstream in a variable) or find containers through Docker")
    if t.zero_downtime == "required" and (risk := pinned_frontend_risk(env)):
        problems.append(f"RELEASE_FRONTEND_PINS_BACKEND=true: {risk} (RELEASE_ZERO_DOWNTIME=required): "
                        f"{PINNED_FRONTEND_FIX}")
    problems += [f"{t.compose_file}: {p}" for p in (missing_services(config, env) + recipe_problems(config, env) + reach_problems(config, t.backend_service)
                                                     + mount_problems(config, t.backend_service, t.migrations_dir))]
    return problems
