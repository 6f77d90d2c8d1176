"""Real components for the tests: PostgreSQL clusters, HTTPS servers with trustme
certificates, pg_dump files, and a Prefect server (Prefect's test harness)."""

import datetime as dt
import fcntl
import json
import os

# The test server stores events every 0.5 s instead of 5 s: the secret sweeps read
# every run's events back, and would otherwise wait for each flush.
os.environ.setdefault("PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL", "0.5")
import subprocess
import tempfile

import atexit
import shutil

# Each test process and every process it starts keep their runs' journal and their
# state (Compose override files) in directories of their own, removed at exit: the
# host's are not the tests'.
os.environ["SMARTRELEASE_JOURNAL"] = tempfile.mkdtemp(prefix="smartrelease-journal-")
os.environ["SMARTRELEASE_STATE"] = tempfile.mkdtemp(prefix="smartrelease-state-")
for _made in ("SMARTRELEASE_JOURNAL", "SMARTRELEASE_STATE"):
    atexit.register(shutil.rmtree, os.environ[_made], ignore_errors=True)
import secrets
import ssl
import threading
from collections.abc import Callable
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import docker
import hypothesis
import prefect.context
import pytest
import time
import trustme
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId, LogFilter,
                                            LogFilterFlowRunId)
from prefect.events.filters import EventAnyResourceFilter, EventFilter
from prefect.client.schemas.sorting import LogSort
from prefect.logging.handlers import APILogHandler
from prefect.settings import temporary_settings

from smartrelease.sandbox.identity import any_free_port as free_port  # noqa: F401 (the tests import it from here)
from smartrelease.local_postgres import Cluster
from pydantic import SecretStr

from smartrelease.adapters.images import remove_images
from smartrelease.tasks.pg_client import HostTools
from smartrelease.adapters.postgres import DatabaseUrl

# CI runs the same examples every time (a random failure there loses a session's
# work); a local run keeps exploring new ones.
hypothesis.settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")

# `make test` hands whole modules to its workers in collection order (tests/suite.py
# passes --dist loadfile --no-loadscope-reorder, and sets MODULE_ORDER_VARIABLE:
# xdist's workers, which collect, see none of those options): the fast modules with the most tests first, one per
# worker, while the first sandboxes come up one at a time; then the rest longest first,
# an e2e test counted as E2E_WEIGHT fast ones, so the short modules fill the end.
# xdist gives each worker its next module before the current one ends: a long module
# last waited behind another and ran alone for two minutes (adopt_e2e, behind faults_e2e).
# The module marked `exclusive` goes last: its worker waits until every other worker
# has ended (ALONE_VARIABLE), then runs it with the machine to itself.
E2E_WEIGHT, FAST_FIRST = 100, 3
MODULE_ORDER_VARIABLE = "SMARTRELEASE_TEST_MODULE_ORDER"
ALONE_VARIABLE = "SMARTRELEASE_TEST_ALONE"  # a directory where each worker says it has ended
ALONE_WAIT_S = 3600  # the other workers' last modules; a worker that crashed never says so


def pytest_collection_modifyitems(config, items):
    if not os.environ.get(MODULE_ORDER_VARIABLE):  # `make test-fast` hands out tests, not modules
        return
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    weight = {m: sum(E2E_WEIGHT if i.get_closest_marker("e2e") else 1 for i in its) for m, its in modules.items()}
    alone = [m for m in modules if any(i.get_closest_marker("exclusive") for i in modules[m])]
    fast = sorted((m for m in modules if weight[m] == len(modules[m])), key=lambda m: -len(modules[m]))[:FAST_FIRST]
    rest = sorted((m for m in modules if m not in fast and m not in alone), key=lambda m: -weight[m])
    items[:] = [item for m in fast + rest + alone for item in modules[m]]


def pytest_sessionfinish(session):
    """A worker of `make test` says it has ended: its sandboxes and server are gone."""
    if (directory := os.environ.get(ALONE_VARIABLE)) and hasattr(session.config, "workerinput"):
        (Path(directory) / f"{session.config.workerinput['workerid']}.ended").touch()


@pytest.fixture(scope="module", autouse=True)
def _alone(request):
    """A module marked `exclusive` starts once every other worker of `make test` has
    ended (tests/suite.py); it then has the machine, and its worker's shared sandbox,
    to itself. Outside `make test` (a module run by hand), it starts at once."""
    directory, worker = os.environ.get(ALONE_VARIABLE), getattr(request.config, "workerinput", None)
    if not (request.node.get_closest_marker("exclusive") and directory and worker):
        yield
        return
    others = {f"gw{i}.ended" for i in range(worker["workercount"])} - {f"{worker['workerid']}.ended"}
    deadline = time.monotonic() + ALONE_WAIT_S
    while not others <= {p.name for p in Path(directory).iterdir()}:  # bounded: the others' last modules
        if time.monotonic() > deadline:
            pytest.fail(f"the other workers did not end within {ALONE_WAIT_S} s: "
                        f"{sorted(others - {p.name for p in Path(directory).iterdir()})} still running")
        time.sleep(1)
    yield


DB_USER, DB_NAME = "smartaccounting", "smartaccounting"
# Sentinel secrets: the secret-leak test searches every log, artifact and report for them.
DB_PASSWORD = "db-pass-SENTINEL-7f3a9c"
JWT_SECRET = "jwt-SENTINEL-0123456789abcdef0123456789abcdef"
BACKUP_PASSPHRASE = "backup-SENTINEL-passphrase-42"
# Quotes, a dollar and a backslash: values reach Compose and the containers unchanged.
METRICS_PASS = "metrics-SENTINEL-'\"$x\\y-pass-99"
SENTINELS = [DB_PASSWORD, JWT_SECRET, BACKUP_PASSPHRASE, METRICS_PASS, "SENTINEL"]


# What this test process names Docker resources after: two runs, or two pytest-xdist
# workers, on one machine never share a Compose project, volume or repository.
RUN_ID = secrets.token_hex(3)


def unique(name: str) -> str:
    return f"{name}-{RUN_ID}"


# One at a time: on two cores, two at once made the whole run slower (first phase
# 20 min 38 s against 17 min 20 s); four at once, when `up` also ran `npm ci` and
# copied node_modules into each build, slowed backends past the release's grace.
@contextmanager
def few_sandboxes_coming_up():
    """One sandbox comes up at a time on this machine (parallel workers, another
    clone's run): two at once made the parallel phase slower on two cores (20 min 38 s
    against 17 min 20 s). A lock file, held while `up` runs."""
    path = Path(tempfile.gettempdir()) / "smartrelease-tests-sandbox-up.lock"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except PermissionError:  # another user's, in sticky /tmp (fs.protected_regular): open it as it is
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # (waits for the other sandbox's `up`: tens of seconds)
        yield
    finally:
        os.close(fd)


@pytest.fixture(autouse=True)
def _secrets_of_this_test():
    """The masker remembers every secret its process reads; in one pytest process
    that would be every test's, so each test starts from what was remembered before it."""
    from smartrelease import redact

    before = redact._process.secrets
    yield
    redact._process.secrets = before


@pytest.fixture(scope="session", autouse=True)
def prefect_server(tmp_path_factory):
    """The suite's Prefect server: the one `smartrelease server up` runs, on a
    PostgreSQL cluster of its own, with on-disk leases."""
    from smartrelease.deployments import server

    settings = server.ServerSettings(state_dir=tmp_path_factory.mktemp("prefect-server"), host="127.0.0.1",
                                     port=free_port(), pg_port=free_port(), database_url=None)
    server.up(settings)
    os.environ.update(server.client_environment(settings))  # for the processes tests start
    with temporary_settings(server.client_settings(settings)), \
            prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()):
        # (the global context too, as Prefect's own test harness does: threads start from it)
        try:
            yield settings
        finally:
            for name in server.client_environment(settings):
                os.environ.pop(name, None)
            server.down(settings)
            server.destroy_database(settings)


async def _run_texts(client, flow_run_id) -> dict:
    run = await client.read_flow_run(flow_run_id)
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    deadline = time.monotonic() + 15
    while True:  # bounded wait until the run's last line has arrived
        logs = await client.read_logs(log_filter=log_filter, sort=LogSort.TIMESTAMP_ASC)
        if any("Finished in state" in l.message for l in logs) or time.monotonic() > deadline:
            break
        await anyio.sleep(0.2)
    artifacts = await client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    task_runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {
        "parameters": repr(run.parameters),
        "state": repr(run.state),
        "logs": "\n".join(l.message for l in logs),
        "artifacts": "\n".join(repr(a.data) + repr(a.description) for a in artifacts),
        "task_runs": "\n".join(repr(t.model_dump()) for t in task_runs),
        "artifact_keys": [a.key for a in artifacts],
        "task_run_counts": {t.name: t.run_count for t in task_runs},
        "terminal": run.state.is_final() if run.state else False,
    }


async def _events(client, flow_run_id, want_terminal: bool) -> list:
    """Every event about the run or its task runs; the events service stores them a
    moment after they happen, so wait (bounded) for the run's terminal event."""
    flt = EventFilter(any_resource=EventAnyResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]))
    deadline = time.monotonic() + 20
    while True:
        page = await client.read_events(filter=flt, limit=50)
        events = list(page.events)
        while page.next_page and len(events) < 2000:
            page = await client.read_events_page(page.next_page)
            events += page.events
        done = any(e.event in TERMINAL_EVENTS and e.resource.id == f"prefect.flow-run.{flow_run_id}" for e in events)
        if done or not want_terminal or time.monotonic() > deadline:
            return events
        await anyio.sleep(0.5)


TERMINAL_EVENTS = {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Crashed", "Cancelled")}


async def _stored(flow_run_id):
    await APILogHandler.aflush()  # logs are shipped in the background: send them now
    async with get_client() as client:
        texts = await _run_texts(client, flow_run_id)
        # A subflow would keep its own logs, artifacts and task runs: swept too, so none escapes.
        children = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
        for child in children:
            for key, value in (await _run_texts(client, child.id)).items():
                if isinstance(value, str):
                    texts[key] += "\n" + value
        events = await _events(client, flow_run_id, want_terminal=texts["terminal"])
        for child in children:
            events += await _events(client, child.id, want_terminal=False)
    texts["events"] = "\n".join(e.model_dump_json() for e in events)
    texts["event_names"] = sorted({e.event for e in events})
    return texts


def stored(flow_run_id):
    """Everything the Prefect server keeps about a flow run and its subflows, as text."""
    return anyio.run(_stored, flow_run_id)


def by_name(report) -> dict:
    """A report's steps by name."""
    return {r.name: r for r in report.results}


def assert_no_secret(texts: dict, secrets: list[str], what: str = "") -> None:
    """No secret in any text: stored ones (stored()), stdout, stderr, reports."""
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in str(text), f"{secret!r} leaked into {where} {what}"


def _cluster(archive: bool = True) -> Cluster:
    # pytest's tmp dirs are 0700; the server runs as `postgres` and must reach its
    # data and archive directories, so clusters live in a traversable dir of their own.
    root = Path(tempfile.mkdtemp(prefix="smartrelease-pg-"))
    root.chmod(0o755)
    cluster = Cluster(root / "pg", free_port(), (root / "wal") if archive else None)
    cluster.init()
    cluster.start()
    cluster.ensure_app_database(DB_USER, DB_PASSWORD, DB_NAME)
    return cluster


def _destroy(cluster: Cluster) -> None:
    cluster.destroy()
    shutil.rmtree(cluster.root.parent, ignore_errors=True)


SHARED_ENV = "e2e"  # the environment (blocks) name of the shared sandbox


@pytest.fixture(scope="session")
def shared_registry():
    """One registry for every sandbox of the run, each under its own repositories:
    the sandbox's base layers are compressed and pushed once, not once per sandbox
    (a push to a new registry: 29 s, 35 s of CPU, here). `make test` starts one for both of its phases and
    every worker (tests/suite.py); a pytest run of its own starts one per process."""
    from smartrelease.sandbox.registry import Registry

    root = Path(tempfile.mkdtemp(prefix="smartrelease-registry-"))
    if addr := os.environ.get("SMARTRELEASE_TEST_REGISTRY"):  # the whole run's (tests/suite.py): not ours to stop
        registry = Registry(root / "registry", addr)
        assert registry.answering(), f"SMARTRELEASE_TEST_REGISTRY={addr}: no registry answers there"
        yield registry
    else:
        registry = Registry(root / "registry", f"127.0.0.1:{free_port()}")
        registry.start()
        yield registry
        registry.stop()
        remove_images(docker.from_env(), f"{registry.addr}/")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def _shared_sandbox_up(shared_registry):
    from tests.release_sandbox import module_sandbox

    with module_sandbox("smartrelease-shared-e2e", SHARED_ENV, registry=shared_registry) as sb:
        try:
            yield sb
        finally:
            sb.resume()  # for `destroy`, which stops each container in turn


@pytest.fixture(scope="module")
def shared_sandbox(_shared_sandbox_up):
    """One sandbox in the runbook's topology (db service on PostgreSQL 17, bridge
    network, the Node.js/Sequelize stand-in) for the end-to-end modules; each leaves
    it running its last release, verified. Started by the first test that asks, up
    for the worker's whole session, and paused between the modules that use it: a
    worker runs other modules meanwhile (its fast ones last), and an idle sandbox's
    health checks cost CPU the other workers wait for."""
    _shared_sandbox_up.resume()
    yield _shared_sandbox_up
    _shared_sandbox_up.pause()


@pytest.fixture(scope="session")
def pg() -> Cluster:
    """A shared cluster with WAL archiving on; tests must leave it running."""
    cluster = _cluster()
    cluster.switch_wal()
    yield cluster
    _destroy(cluster)


@pytest.fixture
def own_pg() -> Cluster:
    """A cluster of the test's own, free to stop or break."""
    cluster = _cluster()
    cluster.switch_wal()
    yield cluster
    _destroy(cluster)


@pytest.fixture
def make_pg() -> Callable[..., Cluster]:
    made = []

    def make(archive: bool = True) -> Cluster:
        made.append(_cluster(archive=archive))
        return made[-1]

    yield make
    for c in made:
        _destroy(c)


# --- HTTPS ------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = self._head()
        self.wfile.write(body)

    def do_HEAD(self):  # the runbook's `curl -I`
        self._head()

    def _head(self) -> bytes:
        status = self.server.status  # type: ignore[attr-defined]
        body = json.dumps({"status": "ok" if status == 200 else "error"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return body


@pytest.fixture(scope="session")
def ca(tmp_path_factory) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


@pytest.fixture
def https_server(ca):
    """Start a real HTTPS server: https_server(status=200, host='localhost', days=90,
    issuer=None) -> URL. `days` < 0 serves an expired certificate; `issuer` another CA."""
    servers = []

    def start(status: int = 200, host: str = "localhost", days: float = 90, issuer: trustme.CA | None = None) -> str:
        now = dt.datetime.now(dt.timezone.utc)
        not_after = now + dt.timedelta(days=days)
        not_before = min(now - dt.timedelta(days=1), not_after - dt.timedelta(days=1))
        cert = (issuer or ca[0]).issue_cert(host, not_before=not_before, not_after=not_after)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.status = status  # type: ignore[attr-defined]
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"https://localhost:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


# --- env files --------------------------------------------------------------

def host_tools(cluster: Cluster, port: int | None = None, password: str = DB_PASSWORD) -> HostTools:
    """This host's PostgreSQL programs, connecting to `cluster` as the app's user."""
    return HostTools(DatabaseUrl("127.0.0.1", port or cluster.port, DB_NAME, DB_USER, SecretStr(password)))


def plain_dump(tools, target: Path) -> Path:
    """pg_dump's custom format, unencrypted, as the runbook's full-backup.sh writes
    (a team's own nightly dumps, beside the tool's encrypted ones)."""
    from smartrelease.process import run

    run(tools.command("pg_dump", "--format=custom", f"--file={target}", timeout_s=300))
    return target


def fresh_backup(cluster: Cluster, directory: Path, name: str = "nightly.dump") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return plain_dump(host_tools(cluster), directory / name)


@pytest.fixture
def app_dir(tmp_path) -> Path:
    d = tmp_path / "app"
    d.mkdir()
    (d / "VERSION").write_text("1.2.3\n")
    return d


@pytest.fixture
def write_env(tmp_path, pg, ca, app_dir) -> Callable[..., Path]:
    """Write an env file whose every value is valid against `pg`; keyword arguments
    override keys (None removes one). Creates the backup dirs and a fresh backup."""

    def write(name: str = "test", cluster: Cluster | None = None, public_url: str = "https://localhost:1", **overrides) -> Path:
        cluster = cluster or pg
        backups = tmp_path / f"backups-{name}"
        if not backups.exists():
            fresh_backup(cluster, backups)
        values = {
            "NODE_ENV": "production",
            "DATABASE_URL": cluster.dsn(DB_USER, DB_PASSWORD, DB_NAME),
            "JWT_SECRET": JWT_SECRET,
            "FRONTEND_URL": "https://app.example.test",
            "CLIENT_URL": "https://app.example.test",
            "CORS_ORIGIN": "https://app.example.test",
            "BACKUP_PASSPHRASE": BACKUP_PASSPHRASE,
            "ALLOW_PROD_MIGRATIONS": "false",
            "BACKUP_DIR": str(backups),
            "WAL_ARCHIVE_DIR": str(cluster.wal_archive_dir),
            "METRICS_BASIC_AUTH_USER": "metrics",
            "METRICS_BASIC_AUTH_PASS": METRICS_PASS,
            "RELEASE_PUBLIC_URL": public_url,
            "RELEASE_CA_BUNDLE": str(ca[1]),
            "RELEASE_APP_DIR": str(app_dir),
            "RELEASE_APPROVAL": "none",  # production by default: the approval tests ask for it
        }
        for key, value in overrides.items():
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value
        path = tmp_path / f".env.{name}"
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        path.chmod(0o600)
        return path

    return write


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NO_NETLINK = Path(__file__).with_name("chromium_no_netlink.c")


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """A function launching headless Chromium for Playwright (extra command-line
    switches as arguments), blind to this host's interfaces changing: see
    tests/chromium_no_netlink.c."""
    shim = tmp_path_factory.mktemp("chromium") / "no_netlink.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(shim), str(NO_NETLINK), "-ldl"], check=True)

    def launch(playwright, *switches: str):
        return playwright.chromium.launch(executable_path=CHROMIUM, env={**os.environ, "LD_PRELOAD": str(shim)},
                                          args=[*(["--no-sandbox"] if os.geteuid() == 0 else []), *switches])
    return launch
