"""The edge's discovery, as Traefik's Docker provider does it: every POLL_S, read
this compose project's containers from the Docker socket (mounted read-only) and
put in the edge's rotation exactly the running ones of BACKEND_HOST (FRONTEND_HOST)
that Docker reports healthy, or that have no health check. A container still
starting, unhealthy (a release drains one by failing its health check) or gone is
taken out. HAProxy's slots (server-template, disabled until used) are filled through
its runtime API; its configuration file is never rewritten.

Python's standard library only: it runs in the edge image as it is.
"""

import http.client
import json
import os
import socket
import sys
import time
import urllib.parse

DOCKER_SOCKET = "/var/run/docker.sock"
HAPROXY_SOCKET = "/tmp/haproxy.sock"
POLL_S = 0.5


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("docker", timeout=5)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.path)


def docker(path: str):
    conn = UnixHTTPConnection(DOCKER_SOCKET)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"Docker answered {response.status} to GET {path}")
        return json.loads(body)
    finally:
        conn.close()


def haproxy(command: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(HAPROXY_SOCKET)
        s.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace").strip()


def routable(container: dict) -> bool:
    """Running, and healthy if it has a health check (its Status reads
    "Up 3 seconds (healthy)", "(unhealthy)" or "(health: starting)")."""
    status = container.get("Status", "")
    return container.get("State") == "running" and ("(" not in status or "(healthy)" in status)


def addresses(containers: list[dict], service: str, networks: set[str]) -> set[str]:
    """The IP addresses, on one of the edge's networks, of `service`'s routable containers."""
    found = set()
    for c in containers:
        if c.get("Labels", {}).get("com.docker.compose.service") != service or not routable(c):
            continue
        for name, net in (c.get("NetworkSettings") or {}).get("Networks", {}).items():
            if name in networks and net.get("IPAddress"):
                found.add(net["IPAddress"])
                break
    return found


class Pool:
    """One HAProxy backend's slots: slot -> the address it routes to (None: disabled)."""

    def __init__(self, backend: str, prefix: str, size: int, port: str):
        self.backend, self.port = backend, port
        self.slots: dict[str, str | None] = {f"{prefix}{i}": None for i in range(1, size + 1)}

    def forget(self) -> None:
        """After a failed update: what HAProxy routes to is unknown, so the next
        round takes every slot out and fills them again."""
        self.slots = {slot: "unknown" for slot in self.slots}

    def commands(self, wanted: set[str]) -> list[str]:
        """The runtime API commands that make the slots route to `wanted`, in order:
        the ones leaving first, so that a slot is free for a new one."""
        out = []
        for slot, addr in self.slots.items():
            if addr is not None and addr not in wanted:
                out.append(f"set server {self.backend}/{slot} state maint")
                self.slots[slot] = None
        for addr in sorted(wanted - set(self.slots.values())):
            free = next((slot for slot, a in self.slots.items() if a is None), None)
            if free is None:
                print(f"edge: {self.backend} has no free slot for {addr} (EDGE_MAX_CONTAINERS)", file=sys.stderr)
                break
            self.slots[free] = addr
            out += [f"set server {self.backend}/{free} addr {addr} port {self.port}",
                    f"set server {self.backend}/{free} state ready"]
        return out


def main() -> None:
    size = int(os.environ.get("EDGE_MAX_CONTAINERS", "8"))
    # (service, its pool): both pools may route to one service, a frontend whose own
    # server proxies /api to the backend.
    pools = [(os.environ.get("BACKEND_HOST", "backend"), Pool("backend", "app", size, os.environ.get("BACKEND_PORT", "8080"))),
             (os.environ.get("FRONTEND_HOST", "frontend"), Pool("frontend", "web", size,
                                                               os.environ.get("FRONTEND_PORT", "8081")))]
    me = docker(f"/containers/{socket.gethostname()}/json")
    project = me["Config"]["Labels"]["com.docker.compose.project"]
    networks = set(me["NetworkSettings"]["Networks"])
    query = urllib.parse.quote(json.dumps({"label": [f"com.docker.compose.project={project}"]}))
    while True:
        try:
            containers = docker(f"/containers/json?all=1&filters={query}")
            for service, pool in pools:
                for command in pool.commands(addresses(containers, service, networks)):
                    answer = haproxy(command)
                    print(f"edge: {service}: {command}" + (f" ({answer})" if answer else ""), flush=True)
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            print(f"edge: discovery: {exc}", file=sys.stderr, flush=True)
            for _, pool in pools:
                pool.forget()
        time.sleep(POLL_S)


if __name__ == "__main__":
    main()
