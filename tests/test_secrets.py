"""Secrets never leave through any channel: standard output and error, and what the
Prefect server keeps (logs, artifacts, flow and task run states, events), for
failing and passing runs, with sentinels in URL userinfo, in third-party exception
text and in log lines. The end-to-end modules sweep the release, rollback, verify,
build and promote runs the same way (conftest.assert_no_secret)."""

import threading
from http.server import ThreadingHTTPServer

import anyio
import pytest
from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.client.schemas.sorting import FlowRunSort

from smartrelease.redact import Masker, remember
from smartrelease.tasks.environment import check_app_env
from smartrelease.tasks.runbook_task import runbook_task
from tests.conftest import DB_PASSWORD, METRICS_PASS, SENTINELS, _Handler, assert_no_secret, stored
from tests.test_cli import smartrelease

# Not a declared secret anywhere: only the userinfo rule can mask it.
UNDECLARED = "userinfo-SENTINEL-undeclared-5d1e"


def latest_run_id(name: str):
    async def read():
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])),
                                               sort=FlowRunSort.START_TIME_DESC, limit=1)
        return runs[0].id

    return anyio.run(read)


@pytest.fixture
def plain_http():
    """A real server answering 200 over plain HTTP: the tls check's reason then quotes the URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.status = 200
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("userinfo,secret", [("metrics", METRICS_PASS), ("deploy", UNDECLARED)])
def test_a_password_in_url_userinfo_reaches_no_output_and_nothing_on_the_server(write_env, plain_http, userinfo, secret):
    # The reproduction: an http:// public URL with a password in it fails the
    # environment and tls checks, and tls's reason quotes the URL.
    name = f"userinfo-{userinfo}"
    path = write_env(name=name, RELEASE_PUBLIC_URL=f"http://{userinfo}:{secret}@127.0.0.1:{plain_http}")
    out = smartrelease("preflight", "--env-file", str(path))
    assert out.returncode == 1, out.stderr
    assert f"{userinfo}:***@127.0.0.1" in out.stdout, out.stdout  # the report still says which URL
    texts = stored(latest_run_id(f"preflight-{name}"))
    assert "prefect.task-run.Failed" in texts["event_names"]  # the events were really read back
    assert f"{userinfo}:***@" in texts["logs"] and f"{userinfo}:***@" in texts["events"]
    assert_no_secret({**texts, "stdout": out.stdout, "stderr": out.stderr}, SENTINELS + [secret, UNDECLARED])


def test_a_passing_preflight_leaks_nothing(write_env, https_server):
    path = write_env(name="cleanrun", public_url=https_server())
    out = smartrelease("preflight", "--env-file", str(path), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    texts = stored(latest_run_id("preflight-cleanrun"))
    assert "prefect.flow-run.Completed" in texts["event_names"]
    assert_no_secret({**texts, "stdout": out.stdout, "stderr": out.stderr}, SENTINELS)


@runbook_task("leaky-driver", timeout_s=30)
def _driver_fails():
    # A third-party library quoting what it was given, as some database drivers do.
    raise RuntimeError(f"driver: authentication failed for password={DB_PASSWORD} at "
                       f"postgresql://app:{UNDECLARED}@db:5432/app")


@flow(name="leaky", flow_run_name="leaky")
def _leaky_flow():
    remember([DB_PASSWORD])  # as load_environment does for an environment's secrets
    get_run_logger().warning("connecting with %s", DB_PASSWORD)  # caught by the logging filter
    _driver_fails()


def test_third_party_exception_text_and_log_lines_are_masked_on_the_server():
    state = _leaky_flow(return_state=True)
    assert state.is_failed()
    texts = stored(state.state_details.flow_run_id)
    assert "driver: authentication failed for password=***" in texts["task_runs"]  # the state message
    assert "connecting with ***" in texts["logs"]
    assert "prefect.task-run.Failed" in texts["event_names"] and "password=***" in texts["events"]
    assert_no_secret({**texts, "state message": state.message}, [DB_PASSWORD, UNDECLARED])


@pytest.mark.parametrize("key,value,reason", [
    ("METRICS_BASIC_AUTH_PASS", "127.0.0.1", "METRICS_BASIC_AUTH_PASS is a common value"),
    ("METRICS_BASIC_AUTH_PASS", "Connection", "METRICS_BASIC_AUTH_PASS is a common value"),
    ("BACKUP_PASSPHRASE", "app.example.test", "BACKUP_PASSPHRASE appears in FRONTEND_URL, CLIENT_URL, CORS_ORIGIN"),
    ("BACKUP_PASSPHRASE", "abc", "BACKUP_PASSPHRASE is shorter than 8 characters"),
])
def test_a_secret_that_masking_would_give_away_is_refused(write_env, key, value, reason):
    from smartrelease.blocks import parse_env_file
    from smartrelease.errors import StepFailed

    with pytest.raises(StepFailed) as exc:
        check_app_env(parse_env_file(write_env(name="weak", **{key: value})))
    assert reason in str(exc.value)


def test_a_database_password_equal_to_the_database_name_is_refused(write_env, pg):
    from smartrelease.blocks import parse_env_file
    from smartrelease.errors import StepFailed

    path = write_env(name="dbname", DATABASE_URL=pg.dsn("smartaccounting", "accounts-db", "accounts-db"))
    with pytest.raises(StepFailed) as exc:
        check_app_env(parse_env_file(path))
    assert "the DATABASE_URL password appears in the DATABASE_URL database" in str(exc.value)


def test_short_secrets_are_masked_too():
    assert Masker(["ab"])("cab, abc") == "c***, ***c"
