"""Which kind of edge is in front of the app, which decides how a release cuts over
(docs/zero-downtime.md): RELEASE_EDGE, or, unset, read from the compose file when
the edge is one of its services.

- `discovery`: it finds containers through Docker and follows their health status
  (Traefik's Docker provider, the sandbox's edge): it mounts the Docker socket.
- `dns`: it resolves the services' names as it goes (Traefik's file provider,
  nginx with a `resolver`, HAProxy with `resolvers`).
- `static`: it resolved them once, when it started (nginx's `proxy_pass
  http://backend:5000` without a resolver, HAProxy without resolvers): it never
  sees a new container, so no release can be invisible behind it; the app is
  stopped first and the edge restarted after, and the plan names the downtime.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import CommandFailed
from smartrelease.tasks.launch import team_config

# What each class means for users during a launch (docs/zero-downtime.md).
EDGE_MEANS = {
    "discovery": "new containers join once Docker reports them healthy, old ones leave once drained "
                 "(RELEASE_DRAIN_FILE): no request dropped if their health checks honour the drain file",
    "dns": "new containers join once they answer on their own address, old ones are told to stop and refuse at "
           "once: no read dropped if the edge tries a refused connection on another address; a write sent on a "
           "kept-alive connection as an old container stops fails, unapplied, and may be sent again",
    "static": "the edge never sees a new container: the app is stopped first and the edge restarted, and users "
              "get errors meanwhile",
}
SOCKET = "/var/run/docker.sock"
CONFIG_BYTES = 256 * 1024  # a mounted configuration file read for its directives, at most
# A directive starts a line or follows `{`, `}` or `;` (comments are taken out first).
_NGINX_RESOLVER = re.compile(r"(^|[{};])\s*resolver\s", re.M)
_NGINX_PROXY = re.compile(r"(^|[{};])\s*(proxy_pass|upstream|fastcgi_pass|grpc_pass)\s", re.M)
_COMMENT = re.compile(r"#[^\n]*")
_HAPROXY_SECTION = re.compile(r"^\s*(backend|listen)\s", re.M)
_HAPROXY_RESOLVERS = re.compile(r"^\s*resolvers\s", re.M)
_HAPROXY_SERVER = re.compile(r"^\s*(server|server-template)\s", re.M)


@dataclass(frozen=True)
class EdgeClass:
    kind: str  # a key of EDGE_MEANS
    why: str  # the setting, or what the compose file showed
    services: tuple[str, ...] = ()  # the edge's compose services, when known

    def line(self) -> str:
        return f"edge: {self.kind} ({self.why})"


def edge_of(env: Environment, config: dict | None = None) -> EdgeClass:
    """The setting when there is one, else what the compose file (`config`, read when
    not given) shows; discovery, saying so, when neither tells."""
    t = env.target
    app = {t.backend_service, t.frontend_service, t.database_service}
    if config is None:
        try:
            config = team_config(env)
        except CommandFailed:
            config = {}
    found = detect(config, app)
    if t.edge:
        return EdgeClass(t.edge, "RELEASE_EDGE", found.services if found else ())
    if found:
        return found
    return EdgeClass("discovery", "assumed: no edge service of the compose file tells how it finds the app; "
                                  "set RELEASE_EDGE")


def detect(config: dict, app: set[str | None]) -> EdgeClass | None:
    """The class of the first service that publishes a port and is not the app's or
    the database's, as far as its image, command, mounts and mounted configuration
    files show; None when none tells."""
    for name, service in sorted((config.get("services") or {}).items()):
        if name in app or not service.get("ports"):
            continue
        if why := _kind_of(service):
            kind, evidence = why
            return EdgeClass(kind, f"detected: service {name} {evidence}", (name,))
    return None


def _kind_of(service: dict) -> tuple[str, str] | None:
    image = str(service.get("image") or "")
    command = " ".join(map(str, service.get("command") or [])) if isinstance(service.get("command"), list) \
        else str(service.get("command") or "")
    mounts = service.get("volumes") or []
    if "traefik" in image.rsplit("/", 1)[-1]:
        if "--providers.docker" in command:
            return "discovery", f"runs {image} with --providers.docker"
        if "--providers.file" in command:
            return "dns", f"runs {image} with --providers.file (its URLs resolved as it connects)"
    if any(m.get("source") == SOCKET or m.get("target") == SOCKET for m in mounts if isinstance(m, dict)):
        return "discovery", f"mounts {SOCKET}: it finds the app's containers through Docker"
    for text, path in _mounted_files(mounts):  # the configuration's syntax tells the software
        if _NGINX_PROXY.search(text):
            return (("dns", f"runs {image}; nginx's {path} has a resolver") if _NGINX_RESOLVER.search(text) else
                    ("static", f"runs {image}; nginx's {path} proxies without a resolver (names resolved once, "
                               "at start)"))
        if _HAPROXY_SECTION.search(text) and _HAPROXY_SERVER.search(text):
            return (("dns", f"runs {image}; HAProxy's {path} has a resolvers section")
                    if _HAPROXY_RESOLVERS.search(text) else
                    ("static", f"runs {image}; HAProxy's {path} has servers and no resolvers (names resolved "
                               "once, at start)"))
    return None


def _mounted_files(mounts: list) -> list[tuple[str, str]]:
    """The text of each bind-mounted file (and of the *.conf/*.cfg files of each
    bind-mounted directory) that can be read, as (text, host path)."""
    found = []
    for m in mounts:
        if not isinstance(m, dict) or m.get("type") != "bind" or not m.get("source"):
            continue
        source = Path(m["source"])
        try:
            files = ([source] if source.is_file() else
                     sorted(p for p in source.iterdir() if p.suffix in (".conf", ".cfg") and p.is_file())[:20]
                     if source.is_dir() else [])
            found += [(_COMMENT.sub("", f.read_bytes()[:CONFIG_BYTES].decode(errors="replace")), str(f)) for f in files]
        except OSError:
            continue
    return found
