"""The control plane is locked (issue 31): the suite's Prefect server, started as
`smartrelease server up` starts it, answers nobody without its credentials, takes no
write without a CSRF token, lets no other web origin call it, and runs no program a
flow run's job variables name; its PostgreSQL trusts no local login."""

import asyncio
import os
import stat
import subprocess
import sys
import uuid

import httpx
import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import PrefectHTTPStatusError
from prefect.workers.process import ProcessJobConfiguration

from smartrelease.deployments import server
from smartrelease.deployments.apply import LOCKED_JOB_VARIABLES, ensure_pool, locked_job_template
from smartrelease.deployments.catalog import pool_name
from smartrelease.errors import ConfigError
from smartrelease.files import read_private
from smartrelease.local_postgres import SUPERUSER
from tests.test_control_plane import REPO


def _auth(settings) -> tuple[str, str]:
    user, _, password = server.auth_string(settings).partition(":")
    return user, password


def test_the_api_answers_nobody_without_the_credentials_server_up_made(prefect_server):
    secrets_query = {"include_secrets": True}
    with httpx.Client(base_url=prefect_server.api_url, timeout=10) as anyone:
        assert anyone.get("/health").status_code == 200  # probes stay open
        assert anyone.post("/block_documents/filter", json=secrets_query).status_code in (401, 403)
        assert anyone.get("/admin/settings").status_code == 401
        assert anyone.get("/admin/settings", auth=("smartrelease", "guessed")).status_code == 401
        assert anyone.get("/admin/version", auth=_auth(prefect_server)).status_code == 200
    mode = stat.S_IMODE(os.lstat(prefect_server.auth_file).st_mode)
    assert mode == 0o600, oct(mode)


def test_a_write_with_the_credentials_but_no_csrf_token_is_refused(prefect_server):
    """What a page in an operator's browser could send with credentials the browser
    keeps: Prefect's own clients fetch a token first."""
    with httpx.Client(base_url=prefect_server.api_url, timeout=10, auth=_auth(prefect_server)) as client:
        refused = client.post("/variables/", json={"name": "planted", "value": "x"})
        assert refused.status_code == 403 and "CSRF" in refused.text, refused.text
        assert client.get("/variables/name/planted").status_code == 404


def test_no_other_web_origin_may_call_the_api(prefect_server):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    with httpx.Client(base_url=prefect_server.api_url, timeout=10) as browser:
        other = browser.options("/block_documents/filter", headers={"Origin": "https://evil.example", **preflight})
        own = browser.options("/block_documents/filter", headers={"Origin": prefect_server.ui_origin, **preflight})
    assert "access-control-allow-origin" not in other.headers, other.headers
    assert own.headers.get("access-control-allow-origin") == prefect_server.ui_origin, own.headers


@pytest.mark.parametrize("variables", [{"command": "sh -c 'id > /tmp/owned'"},
                                       {"env": {"LD_PRELOAD": "/tmp/evil.so"}},
                                       {"working_dir": "/tmp"}])
def test_a_run_that_sets_a_job_variable_changing_what_runs_is_refused(prefect_server, variables):
    environment = f"jobvars{uuid.uuid4().hex[:6]}"
    ensure_pool(environment)
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("preflight")
        deployment_id = client.create_deployment(flow_id, environment, work_pool_name=pool_name(environment),
                                                 entrypoint="smartrelease.flows.preflight:preflight")
        with pytest.raises(PrefectHTTPStatusError, match="422"):
            client.create_flow_run_from_deployment(deployment_id, job_variables=variables)
        assert client.create_flow_run_from_deployment(deployment_id, job_variables={"stream_output": False})


def test_the_worker_has_no_place_for_a_locked_variable_either():
    """A pool whose template was changed back on the server is put right by `apply`;
    meanwhile the worker builds the job from the locked template, where a command
    given anyway goes nowhere: Prefect's own command runs."""
    template = locked_job_template()
    assert not set(LOCKED_JOB_VARIABLES) & set(template["variables"]["properties"])
    job = asyncio.run(ProcessJobConfiguration.from_template_and_values(template, {"command": "sh -c evil",
                                                                                 "env": {"A": "1"}}))
    assert job.command is None and job.env == {}


def test_credentials_are_read_only_from_a_private_file_of_our_own(tmp_path):
    secret = tmp_path / "api-auth"
    secret.write_text("smartrelease:s3cret\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="may be read or written by other users"):
        read_private(secret)
    secret.chmod(0o600)
    assert read_private(secret) == "smartrelease:s3cret"
    planted = tmp_path / "planted"
    planted.symlink_to(secret)
    with pytest.raises(ConfigError, match="a link in its place"):
        read_private(planted)
    assert read_private(tmp_path / "missing") is None


def test_the_cli_on_the_servers_host_uses_its_credentials_and_only_for_that_server(tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTRELEASE_SERVER_DIR", str(tmp_path / "srv"))
    monkeypatch.setenv("SMARTRELEASE_SERVER_PORT", "4999")
    settings = server.ServerSettings(database_url=None)
    settings.state_dir.mkdir(mode=0o700)
    auth = server.ensure_auth(settings)
    env = {"PREFECT_API_URL": settings.api_url}
    server.use_local_credentials(env)
    assert env["PREFECT_API_AUTH_STRING"] == auth
    elsewhere = {"PREFECT_API_URL": "https://prefect.example/api"}
    server.use_local_credentials(elsewhere)
    assert "PREFECT_API_AUTH_STRING" not in elsewhere  # another server's credentials are not ours to send
    assert server.ensure_auth(settings) == auth  # made once, kept


def test_the_cli_is_refused_without_credentials_and_says_so(prefect_server):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_AUTH_STRING"}
    env["SMARTRELEASE_SERVER_DIR"] = str(prefect_server.state_dir.parent / "not-this-one")
    done = subprocess.run([sys.executable, "-m", "smartrelease.cli", "trigger", "verify", "--env", "nowhere"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "refused this client's credentials (401)" in done.stderr, done.stderr
    assert "PREFECT_API_AUTH_STRING" in done.stderr
    assert server.auth_string(prefect_server).split(":", 1)[1] not in done.stderr + done.stdout


def test_the_servers_postgres_trusts_no_local_login(pg):
    """Another user of this host could otherwise open the socket as the superuser."""
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(host=str(pg.socket_dir), port=pg.port, user=SUPERUSER, dbname="postgres",
                        connect_timeout=5, passfile="/dev/null")
    assert stat.S_IMODE(os.stat(pg.socket_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(pg.password_file).st_mode) == 0o600
    with pg.admin() as conn:  # the cluster's creator, with the password
        assert conn.execute("SELECT current_user").fetchone()[0] == SUPERUSER


@pytest.mark.e2e
def test_the_server_serves_its_ui_and_api_over_https_when_given_a_certificate(tmp_path, ca):
    from prefect.settings import temporary_settings
    from prefect.variables import Variable

    from tests.conftest import free_port

    issued = ca[0].issue_cert("localhost")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(b"".join(p.bytes() for p in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    settings = server.ServerSettings(state_dir=tmp_path / "tls-server", host="127.0.0.1", port=free_port(),
                                     pg_port=free_port(), database_url=None, tls_cert=str(cert), tls_key=str(key),
                                     tls_ca=str(ca[1]))
    server.up(settings)
    try:
        assert settings.api_url.startswith("https://localhost:")
        with temporary_settings(server.client_settings(settings)):
            Variable.set("over-tls", "yes", overwrite=True)  # a write: credentials and a CSRF token, encrypted
            assert Variable.get("over-tls") == "yes"
        with pytest.raises(httpx.HTTPError):  # nothing answers in clear
            httpx.get(f"http://127.0.0.1:{settings.port}/api/health", timeout=5)
        ui = httpx.get(settings.ui_url, verify=str(ca[1]), timeout=10, follow_redirects=True)
        assert ui.status_code == 200 and "<html" in ui.text.lower()
        ok, said = server.status(settings)
        assert ok and said.startswith("Prefect server") and "https://localhost:" in said
    finally:
        server.down(settings)
        server.destroy_database(settings)


def test_a_process_given_the_servers_credentials_masks_them():
    """A worker's flow runs inherit PREFECT_API_AUTH_STRING: a line quoting it (an
    error from a client that echoed its URL, say) is masked like any secret."""
    password = "p4ss-SENTINEL-for-the-api"
    code = ("from smartrelease.redact import mask; "
            f"print(mask('auth smartrelease:{password} and {password} alone'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PREFECT_API_AUTH_STRING": f"smartrelease:{password}"})
    assert done.stdout.strip() == "auth *** and *** alone", done.stdout + done.stderr


def test_a_server_reachable_beyond_loopback_without_tls_is_refused_before_anything_starts(tmp_path):
    settings = server.ServerSettings(state_dir=tmp_path / "open", host="0.0.0.0", port=4999, database_url=None)
    with pytest.raises(server.ServerError, match="without TLS would take the API's credentials in clear"):
        server.up(settings)
    assert not settings.state_dir.exists()
