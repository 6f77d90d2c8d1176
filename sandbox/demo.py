"""`make demo`: a fresh sandbox at 0.9.0, then two releases through the release flow,
1.0.0 (a new frontend page) and 1.1.0 (adds a migration), printing both reports.

Runs in one process, so Prefect starts one temporary server for both releases (set
PREFECT_API_URL to keep the runs in a server of your own and see them in its UI).
"""

import shutil
import sys

from blocks import import_env_file
from flows.release import release
from sandbox import manager
from sandbox.app_changes import commit_version, migration

ENVIRONMENT = "sandbox"
CURRENCY_MIGRATION = "migrations/20261101000000-add-account-currency.sql"


def fresh_sandbox(s: manager.Settings) -> None:
    if s.root.exists() or s.env_file.exists():
        manager.log(f"starting afresh: removing {s.root} and {s.env_file}")
        manager.down(s)
        shutil.rmtree(s.root, ignore_errors=True)
        s.env_file.unlink(missing_ok=True)
    if manager.up(s) != 0:
        sys.exit(2)


def ship(version: str, **changes) -> bool:
    commit_version(manager.Settings().app_dir, version, **changes)
    print(f"\n=== releasing {version} ===", flush=True)
    report = release(environment=ENVIRONMENT, return_state=True).result(raise_on_failure=False)
    print(report.text() if hasattr(report, "text") else f"release could not run: {report}", flush=True)
    return getattr(report, "ok", False)


def main() -> int:
    s = manager.Settings()
    fresh_sandbox(s)
    import_env_file(s.env_file, ENVIRONMENT)
    page = (s.app_dir / "client" / "index.html").read_text()
    ok = ship("1.0.0", files={"client/index.html": page.replace("</body>", "<p>Now with 1.0.0.</p></body>")})
    ok = ok and ship("1.1.0", files={CURRENCY_MIGRATION: migration(
        "ALTER TABLE accounts ADD COLUMN currency CHAR(3) NOT NULL DEFAULT 'EUR';",
        "ALTER TABLE accounts DROP COLUMN currency;")})
    print("\ndemo: both releases passed" if ok else "\ndemo: a release FAILED (report above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
