"""Runbook, rollback: "restore the last backup". The database becomes exactly the
backup, in one transaction: if anything fails, it stays as it was.

The checksum is checked first (a tampered file is refused before anything is
touched), then the backup is decrypted into `pg_restore --single-transaction
--file=-`, whose SQL goes to psql after a preamble that opens the transaction and
drops what the app's schema holds now (tables a newer migration created would
otherwise survive the restore). The only COMMIT is the one pg_restore writes after
the archive's last item: a pg_restore that fails (a truncated or altered file, an
archive too new for it) never writes it, and psql ending without it rolls the
transaction back. That holds for psql in the database service's container too, where
stopping the `docker compose exec` client only ends psql's input.
"""

import subprocess
import threading
from pathlib import Path

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import CommandFailed, StepFailed
from smartrelease.process import Deadline, failure, start
from smartrelease.report import Finding
from smartrelease.tasks.backup.crypto import BackupIntegrityError, decrypt_stream, verify_checksum
from smartrelease.tasks.pg_client import pg_tools
from smartrelease.tasks.runbook_task import runbook_task

STEP = "restore-database"
LOCK_TIMEOUT = "30s"  # a session still holding locks fails the restore instead of hanging it

# Everything in the public schema and in schemas the app's user owns, except
# objects that belong to an extension (the dump re-creates those with the extension).
EMPTY_SCHEMA = f"""
BEGIN;
SET lock_timeout = '{LOCK_TIMEOUT}';
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT nspname FROM pg_namespace
           WHERE nspname NOT IN ('public', 'information_schema') AND nspname NOT LIKE 'pg\\_%'
             AND pg_get_userbyid(nspowner) = current_user
  LOOP EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname); END LOOP;
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP %s IF EXISTS public.%I CASCADE',
      CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                     WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, r.relname);
  END LOOP;
  FOR r IN SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c', 'r')
             AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e')
  LOOP EXECUTE format('DROP TYPE IF EXISTS public.%I CASCADE', r.typname); END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS sig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'public'
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
  LOOP EXECUTE format('DROP ROUTINE IF EXISTS %s CASCADE', r.sig); END LOOP;
END $$;
"""


def restore_database(env: Environment, backup_path: str, sha256: str | None) -> Finding:
    """Restore the backup at `backup_path`, whose SHA-256 when it was taken is `sha256`
    (the plan's or the history's record; None only for a backup recorded before
    digests were: then its checksum file alone is what it is checked against)."""
    path = Path(backup_path)
    if not path.is_file():
        raise StepFailed(STEP, f"backup {path} does not exist: nothing was restored")
    if not env.app.backup_passphrase:
        raise StepFailed(STEP, "BACKUP_PASSPHRASE is not set: the backup cannot be decrypted; nothing was restored")
    try:
        actual = verify_checksum(path)
    except BackupIntegrityError as exc:
        raise StepFailed(STEP, f"{exc}; the database was not touched") from None
    if sha256 is not None and actual != sha256:
        raise StepFailed(STEP, f"{path.name} is not the backup that was recorded (SHA-256 {actual[:12]}…, recorded "
                               f"{sha256[:12]}… when it was taken): replaced since; the database was not touched")
    tools = pg_tools(env, STEP)
    timeout_s = env.target.backup_timeout_s
    psql_command = tools.command("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-", timeout_s=timeout_s)
    restore_command = tools.command("pg_restore", "--no-owner", "--no-privileges", "--single-transaction", "--file=-",
                                    connect=False, timeout_s=timeout_s)
    try:
        psql = start(psql_command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except CommandFailed as exc:
        raise StepFailed(STEP, f"{exc}; the database was not touched") from None
    try:
        psql.stdin.write(EMPTY_SCHEMA.encode())  # a few KB: fits the pipe, so this does not block
        psql.stdin.flush()
        restore = start(restore_command, stdin=subprocess.PIPE, stdout=psql.stdin, stderr=subprocess.PIPE)
    except (CommandFailed, BrokenPipeError) as exc:
        _kill(psql)
        raise StepFailed(STEP, f"{exc or 'psql stopped'}; the database was not touched") from None
    psql.stdin.close()  # pg_restore holds the write end now
    errors: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda p=p, n=n: errors.__setitem__(n, p.stderr.read()), daemon=True)
               for n, p in (("psql", psql), ("pg_restore", restore))]
    for t in readers:
        t.start()
    with Deadline(timeout_s, psql, restore) as deadline:
        try:
            # Each chunk is written only once the next one exists: the last one waits for
            # the GCM tag, so an altered file never reaches pg_restore complete.
            held = None
            for chunk in decrypt_stream(path, env.app.backup_passphrase.get_secret_value()):
                if held:
                    restore.stdin.write(held)
                held = chunk
            if held:
                restore.stdin.write(held)
            restore.stdin.close()
        except BackupIntegrityError as exc:
            _kill(restore, psql)  # no COMMIT was written: the transaction is rolled back
            raise StepFailed(STEP, f"{exc}; the database was not touched") from None
        except BrokenPipeError:
            pass  # pg_restore or psql stopped: their exit statuses say why
        restore.wait()
        psql.wait()
    for t in readers:
        t.join(timeout=10)
    rolled_back = "the transaction was rolled back, the database is as it was"
    if deadline.expired:
        raise StepFailed(STEP, f"the restore took longer than {timeout_s:g} s "
                               f"(RELEASE_BACKUP_TIMEOUT_S) and was stopped; {rolled_back}")
    if restore.returncode != 0:
        raise StepFailed(STEP, f"{failure(restore_command.name, restore.returncode, errors.get('pg_restore', b''))}; "
                               f"{rolled_back}")
    if psql.returncode != 0:
        raise StepFailed(STEP, f"{failure(psql_command.name, psql.returncode, errors.get('psql', b''))}; {rolled_back}")
    return Finding(detail=f"database restored from {path.name} (checksum verified, one transaction, "
                          f"pg_restore and psql of {tools.where})")


def _kill(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


# No task time limit of its own: pg_restore and psql are stopped after RELEASE_BACKUP_TIMEOUT_S.
restore_database_task = runbook_task(STEP, timeout_s=None)(restore_database)
