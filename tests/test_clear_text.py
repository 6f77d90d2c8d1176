"""Credentials never cross a network in clear (issue 31): the registry's login is not
sent to a plain-HTTP token service on another host, nor the metrics login to a
plain-HTTP endpoint outside the Compose project. Each listener below is real, on
this host's own non-loopback address, and records what reached it."""

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from smartrelease.blocks.app_environment import AppEnvironment
from smartrelease.blocks.envfile import Environment
from smartrelease.blocks.release_target import ReleaseTarget
from smartrelease.errors import StepFailed
from smartrelease.tasks.metrics import check_metrics
from smartrelease.adapters.registry_auth import RegistryAuth, RegistryAuthError

SECRET = "registry-SENTINEL-pass"


def outward_address() -> str:
    """This host's address on its way out (no packet is sent): not loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))
        return s.getsockname()[0]


class Recorder:
    """An HTTP server that answers every request `status` with `headers` and keeps
    each request's path and Authorization header."""

    def __init__(self, host: str, status: int = 200, headers: dict | None = None, body: bytes = b"{}"):
        self.seen: list[tuple[str, str | None]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                seen.append((self.path, self.headers.get("Authorization")))
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://{host}:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listeners():
    made = []
    yield lambda *a, **k: made.append(Recorder(*a, **k)) or made[-1]
    for r in made:
        r.close()


def test_a_plain_http_token_service_on_another_host_gets_no_credentials(listeners):
    host = outward_address()
    assert not host.startswith("127."), host
    tokens = listeners(host, body=b'{"token": "t"}')
    registry = listeners("127.0.0.1", status=401, headers={
        "WWW-Authenticate": f'Bearer realm="{tokens.url}/token",service="r"'})
    with httpx.Client(auth=RegistryAuth("ci", SECRET), timeout=5) as client:
        with pytest.raises(RegistryAuthError, match="plain HTTP on another host: the registry credentials are not "
                                                    "sent in clear"):
            client.get(f"{registry.url}/v2/")
    assert tokens.seen == []

    on_this_machine = listeners("127.0.0.1", body=b'{"token": "t"}')  # a registry on this machine, as Docker allows
    local = listeners("127.0.0.1", status=401, headers={
        "WWW-Authenticate": f'Bearer realm="{on_this_machine.url}/token",service="r"'})
    with httpx.Client(auth=RegistryAuth("ci", SECRET), timeout=5) as client:
        client.get(f"{local.url}/v2/")
    assert on_this_machine.seen and on_this_machine.seen[0][1].startswith("Basic ")


def test_metrics_credentials_are_not_sent_in_clear_to_a_host_outside_the_project(listeners):
    metrics = listeners(outward_address(), status=401)
    env = Environment(name="clear", target=ReleaseTarget(compose_project="no-such-project",
                                                         metrics_url=f"{metrics.url}/metrics"),
                      app=AppEnvironment(database_url="postgresql://u:p@127.0.0.1:1/db",
                                         metrics_basic_auth_user="prom", metrics_basic_auth_pass=SECRET))
    with pytest.raises(StepFailed, match="is plain HTTP to a host that is not a service of Compose project "
                                         "no-such-project: the metrics credentials are not sent"):
        check_metrics(env)
    assert metrics.seen == []
