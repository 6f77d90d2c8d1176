"""`make demo`: a fresh sandbox at 0.9.0 (PostgreSQL 17 as the project's db service, the
Node.js backend with Sequelize migrations) with its control plane, then three releases
triggered through the `release/sandbox` deployment, printing each report: 1.0.0 (a new
frontend page), 1.1.0 (adds a migration; the sandbox now asks for approvals, and the
demo approves it itself through the API, saying so), and a deliberately broken 1.2.0 (a migration, and a backend whose /health fails), which
rolls itself back to 1.1.0: its migration undone, 1.1.0's images back by digest,
verified, and every account row the same as before. Last, a restore drill of the newest
backup, through the `drill/sandbox` deployment.

Each release goes the way CI starts one: `sandbox up --server` brings up the Prefect
server on PostgreSQL, applies the sandbox's deployments and starts the sandbox's
worker; each release is triggered over the API (deployments/trigger.py) and followed
to its end, and the worker runs it. The server and the worker keep running afterwards,
so the runs, their reports and the history stay in the UI (`make sandbox-down` stops
them).
"""

import sys

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.settings import temporary_settings

from smartrelease.deployments import server
from smartrelease.deployments.approve import answer
from smartrelease.deployments.trigger import follow, succeeded, trigger
from smartrelease.sandbox import manager
from smartrelease.sandbox.app_changes import commit_version, migration
from smartrelease.report import Status
from smartrelease.adapters.postgres import connect

ENVIRONMENT = "sandbox"
CURRENCY_MIGRATION = "migrations/20261101000000-add-account-currency.js"
INVOICES_MIGRATION = "migrations/20261201000000-create-invoices.js"


def fresh_sandbox() -> manager.Settings:
    """A new sandbox (a new id, so new projects and ports) after destroying this
    checkout's earlier one."""
    s = manager.Settings()
    if s.root.exists() or s.env_file.exists() or s.dev.env_file.exists():
        manager.log(f"starting afresh: removing {s.root}, {s.env_file.name} and {s.dev.env_file.name}")
        manager.destroy(s)
        s = manager.Settings()
    if manager.up(s, server=True) != 0:
        sys.exit(2)
    return s


class Outcome:
    def __init__(self, run, report: str):
        self.ok = succeeded(run)
        self.message = (run.state.message or "") if run.state else ""
        self.report = report


def require_approval(s: manager.Settings) -> None:
    """RELEASE_APPROVAL=required in the sandbox's env file, imported again."""
    from smartrelease.record.lock import import_environment

    lines = [line for line in s.env_file.read_text().splitlines() if not line.startswith("RELEASE_APPROVAL=")]
    s.env_file.write_text("\n".join([*lines, "RELEASE_APPROVAL=required"]) + "\n")
    import_environment(s.env_file, ENVIRONMENT)
    print("\n=== from now on each sandbox release waits for an approval (RELEASE_APPROVAL=required) ===", flush=True)


def ship(version: str, **changes) -> Outcome:
    """Commit `version` to the checkout, trigger its release and follow it; a release
    waiting for approval is approved by the demo itself, through the API."""
    commit_version(manager.Settings().app_dir, version, **changes)
    started = trigger("release", ENVIRONMENT, {})
    print(f"\n=== releasing {version}: {started.url} ===", flush=True)

    def on_step(flow, step) -> None:
        print(f"  {step.progress_line()}", flush=True)
        if step.status == Status.WAITING and step.name == "approval":
            said = answer(started.flow_run_id, True, f"the demo approves {version} itself, through the API",
                          "make demo")
            print(f"  demo: {said}  (a person would read the plan on that page, or answer with "
                  f"`smartrelease approve {started.flow_run_id} --reason …`)", flush=True)

    return follow_to_report(started, "release", on_step)


def follow_to_report(started, flow: str, on_step) -> Outcome:
    """Follow a triggered run to its end and print its report artifact."""
    run = follow(started.flow_run_id, timeout_s=1800, on_step=on_step)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    report = next((a.data for a in artifacts if a.key == f"{flow}-{ENVIRONMENT}"), "(no report)")
    print(report, flush=True)
    print(f"-> {run.state.name}: {run.state.message}", flush=True)
    return Outcome(run, report)


def drill() -> Outcome:
    """The restore drill of the newest backup (the one the rollback took before undoing
    1.2.0's migration), as its weekly schedule runs it."""
    started = trigger("drill", ENVIRONMENT, {})
    print(f"\n=== restore drill of the newest backup: {started.url} ===", flush=True)
    return follow_to_report(started, "drill", lambda flow, step: print(f"  {step.progress_line()}", flush=True))


def accounts(s: manager.Settings) -> tuple[int, str]:
    """Row count and an md5 over every row of accounts, in id order."""
    from smartrelease.blocks import load_environment

    with connect(load_environment(ENVIRONMENT), "demo") as conn:
        return conn.execute("SELECT count(*), md5(coalesce(string_agg(a::text, '|' ORDER BY id), '')) FROM accounts a").fetchone()


def open_accounts(s: manager.Settings, names: list[str]) -> None:
    from smartrelease.blocks import load_environment

    with connect(load_environment(ENVIRONMENT), "demo") as conn:
        for name in names:
            conn.execute("INSERT INTO accounts (name) VALUES (%s)", (name,))


def main() -> int:
    s = fresh_sandbox()
    with temporary_settings(updates=server.client_settings(s.plane().server)):
        return releases(s)


def releases(s: manager.Settings) -> int:
    page = (s.app_dir / "client" / "index.html").read_text()
    ok = ship("1.0.0", files={"client/index.html": page.replace("</body>", "<p>Now with 1.0.0.</p></body>")}).ok
    require_approval(s)
    ok = ok and ship("1.1.0", files={CURRENCY_MIGRATION: migration(
        "ALTER TABLE accounts ADD COLUMN currency CHAR(3) NOT NULL DEFAULT 'EUR'",
        "ALTER TABLE accounts DROP COLUMN currency")}).ok
    if not ok:
        print("\ndemo: a release FAILED (report above)")
        return 1

    open_accounts(s, ["Acme GmbH", "Globex SA", "Initech Ltd"])
    before = accounts(s)
    broken = ship("1.2.0", faults=["health-fails"], files={INVOICES_MIGRATION: migration(
        "CREATE TABLE invoices (id SERIAL PRIMARY KEY, account_id INT REFERENCES accounts(id), total NUMERIC)",
        "DROP TABLE invoices")})
    after = accounts(s)
    print(f"\naccounts before 1.2.0: {before[0]} rows, md5 {before[1]}")
    print(f"accounts after its rollback: {after[0]} rows, md5 {after[1]}")
    recovered = "rolled back to 1.1.0 in" in broken.message
    if broken.ok or not recovered or before != after:
        print("demo: the broken 1.2.0 was NOT rolled back cleanly (report above)")
        return 1
    drilled = drill()
    if not drilled.ok:
        print("demo: the restore drill of the newest backup FAILED (report above)")
        return 1
    print(f"demo: 1.0.0 released, 1.1.0 released once approved (by the demo itself, through the API, as "
          f"`smartrelease approve` does); the broken 1.2.0, approved too, {broken.message.split('; ', 1)[1]}, "
          "no data lost; the newest backup restored in a drill: " + drilled.message)
    plane = s.plane().server
    print(f"demo: the runs are in the Prefect UI at {plane.ui_url}: it asks for the server's credentials, the "
          f"contents of {plane.auth_file} (`make sandbox-down` stops the sandbox, its worker and the server)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
