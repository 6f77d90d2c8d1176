"""Stand-in SmartAccounting backend: the endpoints the runbook checks, nothing more."""

import base64
import hmac
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

VERSION = os.environ.get("APP_VERSION", "0.0.0")
GIT_SHA = os.environ.get("GIT_SHA", "unknown")
BUILD_TIME = os.environ.get("BUILD_TIME", "unknown")
ENVIRONMENT = os.environ.get("NODE_ENV", "development")
PORT = int(os.environ.get("PORT", "8080"))
DATABASE_URL = os.environ.get("DATABASE_URL", "")
JWT_SECRET = os.environ.get("JWT_SECRET", "")
METRICS_USER = os.environ.get("METRICS_BASIC_AUTH_USER", "")
METRICS_PASS = os.environ.get("METRICS_BASIC_AUTH_PASS", "")

_counts: dict[str, int] = {}
_lock = threading.Lock()


def read_faults(path: str = "/app/standin-faults") -> dict[str, list[str]]:
    """Faults baked into this image on purpose (see standin-faults)."""
    faults = {}
    try:
        for line in open(path):
            words = line.split("#", 1)[0].split()
            if words:
                faults[words[0]] = words[1:]
    except OSError:
        pass
    return faults


FAULTS = read_faults()
if "report-sha" in FAULTS:
    GIT_SHA = FAULTS["report-sha"][0]
if "report-version" in FAULTS:
    VERSION = FAULTS["report-version"][0]
_flaky = {FAULTS["flaky"][0]: int(FAULTS["flaky"][1])} if "flaky" in FAULTS else {}


def database_ok() -> bool:
    try:
        with psycopg.connect(DATABASE_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:
        return False


def metrics_authorized(header: str | None) -> bool:
    if not header or not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except Exception:
        return False
    return hmac.compare_digest(user, METRICS_USER) and hmac.compare_digest(password, METRICS_PASS)


class Handler(BaseHTTPRequestHandler):
    server_version = "smartaccounting-standin"

    def log_message(self, fmt, *args):  # one line per request on stderr, like a real app
        sys.stderr.write(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}\n")

    def _send(self, status: int, body, content_type="application/json", headers=None):
        data = (json.dumps(body) if content_type == "application/json" else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        with _lock:
            _counts[path] = _counts.get(path, 0) + 1
            flaky = _counts[path] <= _flaky.get(path, 0)
        if flaky:
            return self._send(503, {"status": "flaky on purpose"})
        if path == "/health" and "health-fails" in FAULTS:
            return self._send(500, {"status": "broken on purpose"})
        if path in ("/health", "/api/health"):
            return self._send(200, {"status": "ok"})
        if path == "/ready":
            ok = database_ok()
            return self._send(200 if ok else 503, {"status": "ready" if ok else "database unavailable"})
        if path == "/api/system/version":
            return self._send(200, {"version": VERSION, "gitSha": GIT_SHA, "buildTime": BUILD_TIME, "environment": ENVIRONMENT})
        if path == "/api/auth/health":
            ok = len(JWT_SECRET) >= 32
            return self._send(200 if ok else 503, {"status": "ok" if ok else "JWT secret not configured"})
        if path == "/metrics":
            if "open-metrics" not in FAULTS and not metrics_authorized(self.headers.get("Authorization")):
                return self._send(401, "unauthorized\n", "text/plain", {"WWW-Authenticate": 'Basic realm="metrics"'})
            with _lock:
                lines = [
                    "# HELP smartaccounting_http_requests_total Requests served, by path.",
                    "# TYPE smartaccounting_http_requests_total counter",
                    *(f'smartaccounting_http_requests_total{{path="{p}"}} {n}' for p, n in sorted(_counts.items())),
                ]
            lines += [
                "# HELP smartaccounting_build_info Build metadata.",
                "# TYPE smartaccounting_build_info gauge",
                f'smartaccounting_build_info{{version="{VERSION}",git_sha="{GIT_SHA}"}} 1',
            ]
            return self._send(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")
        return self._send(404, {"error": "not found"})


if __name__ == "__main__":
    if "crash-on-start" in FAULTS:
        print("fatal: cannot start (crash-on-start fault)", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"smartaccounting stand-in {VERSION} ({GIT_SHA}) listening on 127.0.0.1:{PORT}", flush=True)
    # PID 1 in a container gets no default SIGTERM action: without this, every
    # `compose up` that replaces the container waits its full stop timeout.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
