"""Measurement: what Docker's embedded DNS returns for a Compose service's name at each
stage of a cutover, and what a client connecting to each address meets.

A user-defined network, a service name (the alias Compose gives every container of a
service) on two containers, and a client on the same network that resolves the
name (`getent ahostsv4`, Docker's resolver at 127.0.0.11) and connects to each
address it gets. The old container's server, on SIGTERM, stops accepting at once
(closes its listener, as Node's `server.close()` does) and exits after SHUTDOWN_S,
the time in-flight requests have; the new one listens LISTEN_AFTER_S after it starts
(an app's start-up). Stages, in a cutover's order:

  new created, started (not listening yet) -> new listening -> old SIGTERMed
  (shutting down, still running) -> old exited -> old removed

and, apart, a running container disconnected from the network.

usage: python benchmarks/docker_dns.py [--out docs/docker-dns.md]
Needs Docker Engine and the sandbox's base image (`smartrelease sandbox up` builds it).
"""

import argparse
import platform
import secrets
import time
from datetime import datetime, timezone

import docker

from smartrelease.sandbox.base_image import DEFAULT_BASE_IMAGE

ALIAS = "svc"
LABELS = {"smartrelease.measurement": "docker-dns"}
PORT = 8080
SHUTDOWN_S = 4
LISTEN_AFTER_S = 3
# A server that answers its own name; on SIGTERM it closes its listener (new
# connections refused) and exits SHUTDOWN_S later.
SERVER = f"""
const http = require("http");
const name = process.env.NAME;
const server = http.createServer((req, res) => res.end(name));
setTimeout(() => server.listen({PORT}), Number(process.env.LISTEN_AFTER_MS || 0));
process.on("SIGTERM", () => {{ server.close(); setTimeout(() => process.exit(0), {SHUTDOWN_S * 1000}); }});
"""
# Resolves the alias, then connects to each address: "ip=answer", "ip=refused", ...
PROBE = f"""
const dns = require("dns"), http = require("http");
dns.lookup("{ALIAS}", {{all: true, family: 4}}, (err, found) => {{
  if (err) {{ console.log("lookup: " + err.code); return; }}
  let left = found.length, out = [];
  for (const {{address}} of found) {{
    const req = http.get({{host: address, port: {PORT}, timeout: 1000}}, res => {{
      let body = ""; res.on("data", d => body += d);
      res.on("end", () => {{ out.push(address + "=" + body); if (!--left) console.log(out.sort().join(" ")); }});
    }});
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", e => {{ out.push(address + "=" + (e.code === "ECONNREFUSED" ? "refused" : e.message));
                            if (!--left) console.log(out.sort().join(" ")); }});
  }}
}});
"""


def server(client, network: str, role: str):
    """A container of the service, created with its alias, not started."""
    c = client.containers.create(DEFAULT_BASE_IMAGE, ["node", "-e", SERVER], name=f"{network}-{role}",
                                 environment={"NAME": role, "LISTEN_AFTER_MS": str(LISTEN_AFTER_S * 1000 * (role == "new"))},
                                 network=network, labels=LABELS)
    net = client.networks.get(network)
    net.disconnect(c)
    net.connect(c, aliases=[ALIAS])  # as Compose gives every container of a service
    return c


def look(prober, names: dict[str, str]) -> str:
    """What the client resolves and meets, each address named after its container:
    "old answered, new refused"."""
    code, out = prober.exec_run(["node", "-e", PROBE])
    text = out.decode().strip()
    if not text or text.startswith("lookup:"):
        return text.replace("lookup: ", "nothing (") + ")" if text else f"(the client exited {code})"
    seen = []
    for item in text.split():
        address, _, got = item.partition("=")
        name = names.get(address, address)
        seen.append(f"{name} answered" if got == name else f"{name} {got}")
    return ", ".join(seen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the table (markdown) here too")
    args = parser.parse_args()
    client = docker.from_env()
    run = secrets.token_hex(3)
    network = f"smartrelease-dns-{run}"
    client.networks.create(network, labels=LABELS)
    made = []
    rows: list[tuple[str, str]] = []
    try:
        prober = client.containers.run(DEFAULT_BASE_IMAGE, ["sleep", "600"], name=f"{network}-client", detach=True,
                                       network=network, labels=LABELS)
        made.append(prober)
        old = server(client, network, "old")
        made.append(old)
        old.start()
        names = {}

        def refresh():
            for c in made:
                c.reload()
                ip = (c.attrs["NetworkSettings"]["Networks"].get(network) or {}).get("IPAddress")
                if ip:
                    names[ip] = c.name.removeprefix(f"{network}-")

        def record(stage: str, wait_s: float = 0.3):
            time.sleep(wait_s)
            refresh()
            rows.append((stage, look(prober, names)))
            print(f"{stage}: {rows[-1][1]}", flush=True)

        record("old running, listening", 1)
        new = server(client, network, "new")
        made.append(new)
        record("new created, not started")
        new.start()
        record(f"new started, not listening yet (listens {LISTEN_AFTER_S} s after start)")
        record("new listening", LISTEN_AFTER_S + 0.5)
        old.kill(signal="SIGTERM")
        record(f"old SIGTERMed: shutting down, still running (exits {SHUTDOWN_S} s later)")
        old.wait(timeout=SHUTDOWN_S + 10)
        record("old exited (stopped, not removed)", 0)
        old.remove()
        made.remove(old)
        record("old removed", 0)
        client.networks.get(network).disconnect(new)
        record("new disconnected from the network (running)", 0)
    finally:
        for c in made:
            c.remove(force=True)
        client.networks.get(network).remove()
    table = ["| stage | the name resolves to (and what a connection to each address got) |", "|---|---|"]
    table += [f"| {stage} | {seen} |" for stage, seen in rows]
    text = (f"Docker Engine {client.version()['Version']}, {platform.machine()}, "
            f"{datetime.now(timezone.utc):%Y-%m-%d}\n\n" + "\n".join(table) + "\n")
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
