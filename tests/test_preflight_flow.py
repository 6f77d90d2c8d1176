"""The preflight flow under a real Prefect server (the test harness)."""

import threading

from smartrelease.record.lock import import_environment
from smartrelease.flows.preflight import CHECKS, preflight
from smartrelease.report import Report, Status

from tests.conftest import SENTINELS, stored


def run(env_name: str):
    state = preflight(environment=env_name, return_state=True)
    return state, state.result(raise_on_failure=False)


def test_all_checks_pass_and_publish_an_artifact(write_env, https_server):
    import_environment(write_env(public_url=https_server()), "pass")
    state, report = run("pass")
    assert state.is_completed()
    assert isinstance(report, Report) and report.ok
    assert [r.name for r in report.results] == list(CHECKS)
    assert all(r.status == Status.PASSED for r in report.results), report.text()
    assert "preflight-pass" in stored(state.state_details.flow_run_id)["artifact_keys"]


def test_every_failure_is_reported_together(write_env, https_server, own_pg):
    path = write_env(name="broken", cluster=own_pg, public_url=https_server(days=-1))
    import_environment(path, "broken")
    own_pg.stop()  # the database is down and the certificate has expired
    state, report = run("broken")
    assert state.is_failed()
    by_name = {r.name: r for r in report.results}
    assert by_name["database"].status == Status.FAILED and "Connection refused" in by_name["database"].detail
    assert by_name["tls"].status == Status.FAILED and by_name["tls"].detail == "certificate of localhost has expired"
    assert by_name["wal-archive"].status == Status.FAILED
    # The checks that do not depend on the database or the certificate still ran and passed.
    for name in ("environment", "backup-dirs", "backups"):
        assert by_name[name].status == Status.PASSED, by_name[name]
    assert "database" in state.message and "tls" in state.message


def test_a_transient_database_failure_passes_on_retry(write_env, https_server, own_pg):
    import_environment(write_env(name="flaky", cluster=own_pg, public_url=https_server()), "flaky")
    own_pg.stop()
    restarter = threading.Timer(1.0, own_pg.start)  # back before the first retry (2 s)
    restarter.start()
    try:
        state, report = run("flaky")
    finally:
        restarter.join()
    by_name = {r.name: r for r in report.results}
    assert by_name["database"].status == Status.PASSED, by_name["database"]
    assert stored(state.state_details.flow_run_id)["task_run_counts"]["database"] >= 2


def test_no_secret_reaches_logs_artifacts_parameters_or_report(write_env, https_server, pg):
    # One failing run (wrong password, bad certificate, short secrets) and one passing run.
    bad = write_env(name="leaky", public_url=https_server(days=-1),
                    DATABASE_URL=pg.dsn("smartaccounting", "SENTINEL-wrong-password", "smartaccounting"))
    import_environment(bad, "leaky")
    import_environment(write_env(name="clean", public_url=https_server()), "clean")
    for name in ("leaky", "clean"):
        state, report = run(name)
        texts = stored(state.state_details.flow_run_id)
        texts["report"] = report.model_dump_json() + report.markdown() + report.text()
        # The sweep is only worth something if the server really holds the run's logs.
        assert "environment passed" in texts["logs"] or "environment failed" in texts["logs"]
        for where, text in texts.items():
            for secret in SENTINELS + ["SENTINEL-wrong-password"]:
                assert secret not in str(text), f"{secret!r} leaked into {where} of run {name}"
    assert not run("leaky")[1].ok  # the failing run did fail, so its error paths were exercised
