"""Measurement: what an edge does with a request it sends on a kept-alive connection
just as the server's graceful stop closes that connection.

A container leaves Docker's DNS answers only when it exits, so an edge that resolves
names (RELEASE_EDGE=dns) keeps sending to an old container while it stops. Its
graceful stop (nginx's SIGQUIT, Go's Shutdown, Node's server.close()) closes its
idle kept-alive connections at once; a request the edge wrote on one a moment
earlier is then reset unread. The moment is a few milliseconds wide; here it is held
open: the old nginx's worker is frozen (SIGSTOP) while the edge sends it requests on
kept-alive connections, then told to stop gracefully (SIGQUIT) and thawed, so that
it closes its idle connections before it reads them.

Edges: the sandbox's HAProxy edge in EDGE_MODE=dns (sandbox/edge/entrypoint.sh), and,
when Go is installed, Go's httputil.ReverseProxy (keepalive_race_proxy.go: the
proxying core of Traefik, with Traefik's 200 idle connections per host).

usage: python benchmarks/keepalive_race.py [--rounds 5] [--out docs/benchmarks-keepalive-race.md]
Needs Docker Engine and the sandbox's base image (`smartrelease sandbox up` builds it).
"""

import argparse
import platform
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import docker
import httpx

from smartrelease.sandbox.base_image import DEFAULT_BASE_IMAGE

HERE = Path(__file__).resolve().parent
ENTRYPOINT = HERE.parent / "sandbox" / "edge" / "entrypoint.sh"
LABELS = {"smartrelease.measurement": "keepalive-race"}
CLIENTS = 12  # client connections: enough that the edge sends some to the frozen server
NGINX = """worker_processes 1;
events {}
http {
  access_log off;
  keepalive_timeout 65s;
  server { listen 8081; location / { return 201 "ok\\n"; } }
}
"""
# The nginx worker's pid inside its container (procps is not in the base image).
WORKER = "for p in /proc/[0-9]*; do grep -qa 'nginx[:] worker' $p/cmdline 2>/dev/null && echo ${p#/proc/}; done"


def kept_alive(web) -> int:
    """The connections established to the server's port 8081 (0x1F91), from /proc/net/tcp."""
    table = web.exec_run(["cat", "/proc/net/tcp"]).output.decode().splitlines()[1:]
    return sum(1 for line in table if line.split()[1].endswith(":1F91") and line.split()[3] == "01")


def round_(webs, url: str, method: str, verify) -> Counter:
    """One race: every client connection has sent requests (the next is not its first),
    the worker of the server the edge keeps the most connections to is frozen, each
    client connection sends one more, and the worker is told to stop and thawed."""
    conns = [httpx.Client(timeout=10, verify=verify) for _ in range(CLIENTS)]
    outcomes = Counter()
    try:
        for c in conns:
            for _ in range(5):
                c.request(method, url).raise_for_status()
        # Go's dialer prefers one of the name's addresses (RFC 6724): not always the first server.
        web = max(webs, key=kept_alive)
        [worker] = web.exec_run(["sh", "-c", WORKER]).output.decode().split()
        web.exec_run(["kill", "-STOP", worker])

        def send(c):
            t0 = time.monotonic()
            try:
                outcome = str(c.request(method, url).status_code)
            except httpx.HTTPError as e:
                outcome = type(e).__name__
            # The requests the frozen server held are those answered after the thaw.
            outcomes[(outcome, time.monotonic() - t0 > 0.3)] += 1

        threads = [threading.Thread(target=send, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        time.sleep(0.5)
        web.exec_run(["sh", "-c", f"kill -QUIT {worker}; kill -CONT {worker}"])
        for t in threads:
            t.join()
    finally:
        for c in conns:
            c.close()
    return outcomes


def tls(dir_: Path) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(dir_ / "edge.key"),
                    "-out", str(dir_ / "edge.pem")], check=True, capture_output=True)


def go_proxy(dir_: Path) -> Path | None:
    go = shutil.which("go")
    if not go:
        return None
    src = dir_ / "proxy"
    src.mkdir()
    shutil.copy(HERE / "keepalive_race_proxy.go", src / "main.go")
    (src / "go.mod").write_text("module proxy\n\ngo 1.19\n")
    subprocess.run([go, "build", "-o", str(src / "proxy"), "."], cwd=src, check=True, capture_output=True,
                   env={"CGO_ENABLED": "0", "HOME": str(dir_), "GOCACHE": str(dir_ / "cache"), "PATH": "/usr/bin:/bin"})
    return src / "proxy"


def measure(client, dir_: Path, edge: str, rounds: int) -> dict[str, Counter]:
    network = f"kar-{secrets.token_hex(3)}"
    client.networks.create(network, labels=LABELS)
    made = []
    try:
        (dir_ / "nginx.conf").write_text(NGINX)
        webs = [client.containers.run(
            DEFAULT_BASE_IMAGE, ["nginx", "-g", "daemon off;"], name=f"{network}-web{n}", detach=True, labels=LABELS,
            network=network, volumes={str(dir_ / "nginx.conf"): {"bind": "/etc/nginx/nginx.conf", "mode": "ro"}})
            for n in range(2)]
        made += webs
        for w in webs:  # the alias the edge resolves, as Compose gives it
            client.networks.get(network).disconnect(w)
            client.networks.get(network).connect(w, aliases=["frontend"])
        if edge == "haproxy":
            command = ["sh", "/edge-entrypoint.sh"]
            env = {"EDGE_MODE": "dns", "BACKEND_ROUTES": "/nothing", "EDGE_LISTEN": "8443"}
            mounts = {str(ENTRYPOINT): {"bind": "/edge-entrypoint.sh", "mode": "ro"},
                      str(dir_): {"bind": "/tls", "mode": "ro"}}
            port, url_of, verify = 8443, "https://127.0.0.1:{}/", str(dir_ / "edge.pem")
        else:
            command, env = ["/proxy"], {}
            mounts = {str(dir_ / "proxy" / "proxy"): {"bind": "/proxy", "mode": "ro"}}
            port, url_of, verify = 8000, "http://127.0.0.1:{}/", True
        proxy = client.containers.run(DEFAULT_BASE_IMAGE, command, name=f"{network}-edge", detach=True, labels=LABELS,
                                      network=network, environment=env, volumes=mounts,
                                      ports={f"{port}/tcp": ("127.0.0.1", None)})
        made.append(proxy)
        proxy.reload()
        url = url_of.format(proxy.ports[f"{port}/tcp"][0]["HostPort"])
        deadline = time.monotonic() + 10
        while True:  # bounded by the edge's first resolution of the name
            try:
                if httpx.get(url, verify=verify, timeout=1).status_code == 201:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{edge}: the edge did not answer 201 within 10 s")
            time.sleep(0.2)
        results = {}
        for method in ("GET", "POST"):
            results[method] = Counter()
            for _ in range(rounds):
                # nginx's master starts a new worker when the old one has stopped.
                results[method] += round_(webs, url, method, verify)
                time.sleep(1.5)  # the edge has resolved the name again
        return results
    finally:
        for c in made:
            c.remove(force=True)
        client.networks.get(network).remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    client = docker.from_env()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dir_ = Path(tmp)
        tls(dir_)
        edges = ["haproxy"] + (["go"] if go_proxy(dir_) else [])
        for edge in edges:
            for method, outcomes in measure(client, dir_, edge, args.rounds).items():
                held = {o: n for (o, slow), n in outcomes.items() if slow}
                rows.append(f"| {edge} | {method} | {sum(held.values())} | "
                            + ", ".join(f"{n} {o}" for o, n in sorted(held.items())) + " |")
    names = {"haproxy": "the sandbox's HAProxy edge, EDGE_MODE=dns",
             "go": "Go's httputil.ReverseProxy (Traefik's core)"}
    text = (f"Docker Engine {client.version()['Version']}, {platform.machine()}, "
            f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {args.rounds} rounds of {CLIENTS} requests per row; "
            f"edges: {'; '.join(names[e] for e in edges)}"
            + ("" if "go" in edges else " (Go is not installed: the Go edge was not measured)") + ".\n\n"
            "| edge | method | requests the stopping server held | what the client got |\n|---|---|---:|---|\n"
            + "\n".join(rows) + "\n")
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
