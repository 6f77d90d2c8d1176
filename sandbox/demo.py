"""`make demo`: a fresh sandbox at 0.9.0 (PostgreSQL 17 as the project's db service, the
Node.js backend with Sequelize migrations), then three releases through the release flow,
printing each report: 1.0.0 (a new frontend page), 1.1.0 (adds a migration), and a
deliberately broken 1.2.0 (a migration, and a backend whose /health fails), which
rolls itself back to 1.1.0: its migration undone, 1.1.0's images back by digest,
verified, and every account row the same as before.

Runs in one process, so Prefect starts one temporary server for both releases (set
PREFECT_API_URL to keep the runs in a server of your own and see them in its UI).
"""

import sys

from blocks import import_env_file
from flows.release import release
from sandbox import manager
from sandbox.app_changes import commit_version, migration
from tasks.postgres import connect

ENVIRONMENT = "sandbox"
CURRENCY_MIGRATION = "migrations/20261101000000-add-account-currency.js"
INVOICES_MIGRATION = "migrations/20261201000000-create-invoices.js"


def fresh_sandbox(s: manager.Settings) -> None:
    if s.root.exists() or s.env_file.exists() or s.dev.env_file.exists():
        manager.log(f"starting afresh: removing {s.root}, {s.env_file.name} and {s.dev.env_file.name}")
        manager.destroy(s)
    if manager.up(s) != 0:
        sys.exit(2)


def ship(version: str, **changes):
    commit_version(manager.Settings().app_dir, version, **changes)
    print(f"\n=== releasing {version} ===", flush=True)
    report = release(environment=ENVIRONMENT, return_state=True).result(raise_on_failure=False)
    print(report.text() if hasattr(report, "text") else f"release could not run: {report}", flush=True)
    return report


def accounts(s: manager.Settings) -> tuple[int, str]:
    """Row count and an md5 over every row of accounts, in id order."""
    from blocks import load_environment

    with connect(load_environment(ENVIRONMENT), "demo") as conn:
        return conn.execute("SELECT count(*), md5(coalesce(string_agg(a::text, '|' ORDER BY id), '')) FROM accounts a").fetchone()


def open_accounts(s: manager.Settings, names: list[str]) -> None:
    from blocks import load_environment

    with connect(load_environment(ENVIRONMENT), "demo") as conn:
        for name in names:
            conn.execute("INSERT INTO accounts (name) VALUES (%s)", (name,))


def main() -> int:
    s = manager.Settings()
    fresh_sandbox(s)
    import_env_file(s.env_file, ENVIRONMENT)
    page = (s.app_dir / "client" / "index.html").read_text()
    ok = ship("1.0.0", files={"client/index.html": page.replace("</body>", "<p>Now with 1.0.0.</p></body>")}).ok
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
    rb = broken.facts.rollback if getattr(broken, "facts", None) else None
    print(f"\naccounts before 1.2.0: {before[0]} rows, md5 {before[1]}")
    print(f"accounts after its rollback: {after[0]} rows, md5 {after[1]}")
    if broken.ok or rb is None or not rb.recovered or before != after:
        print("demo: the broken 1.2.0 was NOT rolled back cleanly (report above)")
        return 1
    print(f"demo: 1.0.0 and 1.1.0 released; the broken 1.2.0 rolled back to {rb.to_version} in "
          f"{rb.time_to_recover_s:.1f} s, no data lost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
