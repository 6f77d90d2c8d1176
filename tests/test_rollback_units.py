"""The rollback's decisions as pure logic: history stack, target, backup, down steps,
the step sequence and the advice; plus the rollback plan's refusal on a real engine."""

import docker
import pytest
from pydantic import SecretStr

from smartrelease.blocks.app_environment import AppEnvironment
from smartrelease.blocks.envfile import Environment
from smartrelease.blocks.release_target import ReleaseTarget
from smartrelease.flows.rollback import advice, sequence
from smartrelease import cli
from smartrelease.errors import StepFailed
from smartrelease.report import ReleaseFacts, Report, RollbackFacts, Status, StepResult
from smartrelease.tasks.migrations import MigrationPlan, edited_since
from smartrelease.tasks.undo import unexpected_change
from tests.conftest import DB_NAME, DB_PASSWORD, DB_USER
from smartrelease.record.history import deployed
from smartrelease.tasks.rollback_inputs import STRATEGIES, RollbackInputs, backup_after, target_from_history
from smartrelease.tasks.rollback_plan import DeployedVersion, database_decision, rollback_plan, undo_out_of_order

B, F = "reg/app/backend@sha256:", "reg/app/frontend@sha256:"


def row(version, result="released", backup="", left=""):
    return {"version": version, "result": result, "backend": B + version, "frontend": F + version,
            "backup": backup, "migrations_left": left}


def test_the_history_stack_pushes_releases_and_pops_rollbacks():
    rows = [row("1.0.0"), row("1.1.0"), row("1.2.0"), row("1.3.0", "failed at verify; rolled back to 1.2.0"),
            row("1.1.0", "rolled back")]
    assert [r["version"] for r in deployed(rows)] == ["1.0.0", "1.1.0"]
    assert deployed(rows)[-1]["result"] == "rolled back"
    assert [r["version"] for r in deployed(rows + [row("1.4.0")])] == ["1.0.0", "1.1.0", "1.4.0"]


def test_the_default_target_is_the_release_before_the_running_one_unless_the_environment_is_half_done():
    stack = [row("1.0.0"), row("1.1.0")]
    running = DeployedVersion(version="1.1.0", images={"backend": B + "1.1.0", "frontend": F + "1.1.0"})
    assert target_from_history(stack, running, None)["version"] == "1.0.0"
    assert target_from_history(stack, None, None)["version"] == "1.1.0"  # interrupted: back to the last good
    assert target_from_history(stack, running, "1.1.0")["version"] == "1.1.0"
    with pytest.raises(StepFailed, match="only release in the history"):
        target_from_history(stack[:1], DeployedVersion(version="1.0.0", images={"backend": B + "1.0.0", "frontend": F + "1.0.0"}), None)
    with pytest.raises(StepFailed, match="0.1.0 is not among"):
        target_from_history(stack, running, "0.1.0")


def test_the_backup_to_restore_is_the_first_one_whose_changes_are_still_there():
    history = [row("1.0.0"), row("1.1.0", "failed at wait-ready; rolled back to 1.0.0", backup="undone.enc"),
               row("1.2.0", "failed at wait-ready; rolled back to 1.0.0", backup="left.enc", left="m1"),
               row("1.3.0", backup="later.enc")]
    assert backup_after(history, history[0])["backup"] == "left.enc"
    assert backup_after(history, history[2])["backup"] == "later.enc"
    assert backup_after(history, history[3]) is None


def test_an_undo_must_remove_exactly_the_expected_migration_and_nothing_else():
    before = ["m1", "m2", "m3"]
    assert unexpected_change(before, ["m1", "m2"], "m3") is None
    assert unexpected_change(before, before, "m3") == "m3 is still recorded as applied"
    assert unexpected_change(before, ["m1"], "m3") == "it also removed m2"
    assert unexpected_change(before, ["m1", "m2", "m4"], "m3") == "m4 appeared"


def inputs(strategy="undo", to_undo=("m2", "m1"), without_down=(), failed=()):
    return RollbackInputs(detail="", environment="prod", from_version="1.1.0",
                          target=DeployedVersion(version="1.0.0", images={"backend": B + "1", "frontend": F + "1"}),
                          strategy=strategy, to_undo=list(to_undo), undo_image=B + "2", without_down=list(without_down),
                          backup=None, failed_migrations=list(failed))


def env():
    return Environment(name="prod", app=AppEnvironment(), target=ReleaseTarget(
        env_file="/etc/smartaccounting/.env.prod", registry="127.0.0.1:9", backend_image="app/backend",
        frontend_image="app/frontend", compose_project="smartrelease-units-no-such-project"))


def test_the_sequence_follows_the_strategy_and_a_missing_down_step_keeps_the_database_out_of_it():
    # The code first (expand/contract: the previous version runs on the newer schema), the undo while it serves.
    assert sequence(inputs()) == ("relaunch", "wait-ready", "safety-backup", "undo-migrations", "verify")
    # A release that cannot run beside the older schema: the backend stopped, the database first.
    assert sequence(inputs(), stop_first=True) == ("stop-backend", "safety-backup", "undo-migrations", "relaunch",
                                                   "wait-ready", "verify")
    assert sequence(inputs(to_undo=())) == ("relaunch", "wait-ready", "verify")
    assert sequence(inputs(without_down=["m2"])) == ("undo-migrations", "relaunch", "wait-ready", "verify")
    assert sequence(inputs("none")) == ("relaunch", "wait-ready", "verify")
    assert sequence(inputs("restore")) == ("relaunch", "wait-ready", "verify")  # no backup: nothing to restore


def test_the_advice_names_the_migration_the_commands_and_the_guard():
    facts = RollbackFacts(recovered=True)
    advice(env(), inputs(without_down=["m2"], failed=["m3"]), facts)
    blocked, guard = facts.instructions
    assert "m2 has no down step" in blocked and "1.0.0 runs on it" in blocked
    assert "smartrelease rollback --env-file /etc/smartaccounting/.env.prod --to 1.0.0 --db-strategy restore" in blocked
    assert "m3" in guard and "`smartrelease guard off --name prod`" in guard
    none = RollbackFacts()
    advice(env(), inputs("none"), none)
    assert none.warnings == ["database strategy none: m2, m1 stay applied under 1.0.0"]


def test_the_rollback_shows_in_every_rendering_of_the_report():
    rb = RollbackFacts(to_version="1.0.0", recovered=True, time_to_recover_s=4.2, migrations_undone=["m1"],
                       instructions=["do this"], warnings=["beware"])
    report = Report(flow="release", environment="prod", facts=ReleaseFacts(version="1.1.0", rollback=rb),
                    results=[StepResult(name="wait-ready", status=Status.FAILED, detail="unhealthy", duration_ms=1)])
    assert report.release_json()["rollback"]["time_to_recover_s"] == 4.2
    assert "## Rollback to 1.0.0: recovered" in report.markdown() and "1. do this" in report.markdown()
    assert "rollback to 1.0.0: recovered (database: undo, undone: m1, time to recover 4.2 s)" in report.text()
    assert "WARNING: beware" in report.text()


def test_the_cli_offers_the_same_strategies_as_the_flows():
    assert cli.STRATEGIES == STRATEGIES


def test_a_rollback_plan_without_a_pinned_previous_version_refuses_unless_first_release(pg):
    docker.from_env().ping()  # a real engine: the project simply has no containers
    plan = MigrationPlan(detail="", in_image=[], pending=[], unknown=[])
    with pytest.raises(StepFailed, match="rollback plan incomplete: the running backend and frontend are not both "
                                         "known by a registry digest.*BACKUP_DIR \\(unset\\) is not a directory. "
                                         "Nothing was changed"):
        rollback_plan(env(), "1.1.0", plan, first_release=False)
    database = env()
    database.app.database_url = SecretStr(pg.dsn(DB_USER, DB_PASSWORD, DB_NAME))
    first = rollback_plan(database, "1.0.0", plan, first_release=True)
    assert first.previous is None and first.warning and "first release" in first.detail
    assert "first release: nothing to go back to" in first.markdown()


def test_the_plan_decides_an_exact_undo_only_when_the_undo_command_can_revert_exactly_the_releases_migrations():
    applied = ["20260101-create-accounts.js", "20260301-add-vat.js"]
    assert database_decision([], applied, []) == ("nothing", "no migration runs")
    assert database_decision(["20260401-b.js", "20260402-c.js"], applied, []) == (
        "undo", "20260402-c.js, 20260401-b.js, newest first")
    assert database_decision(["20260401-b.js"], [], []) == ("undo", "20260401-b.js, newest first")
    # `db:migrate:undo` reverts the highest-named applied migration: one added out of
    # order would take 20260301-add-vat.js with it.
    assert database_decision(["20260201-early.js", "20260401-b.js"], applied, []) == (
        "restore", "20260201-early.js sorts before 20260301-add-vat.js, already applied: the undo command reverts "
                   "the highest-named migration first")
    assert database_decision(["20260401-b.js"], applied, ["20260401-b.js"]) == (
        "restore", "no down step: 20260401-b.js")



def test_an_applied_migration_whose_file_changed_is_named_and_a_new_or_unapplied_one_is_not():
    running = {"01-init.js": b"up1", "02-add.js": b"up2", "03-later.js": b"up3"}
    new = {"01-init.js": b"up1", "02-add.js": b"up2 // edited", "03-later.js": b"up3 changed", "04-new.js": b"up4"}
    # 03 changed too but was never applied: its new text is what will run
    assert edited_since(running, new, ["01-init.js", "02-add.js"]) == ["02-add.js"]
    assert edited_since({}, new, ["01-init.js", "02-add.js"]) == []  # nothing to compare with


def test_an_undo_is_refused_when_the_undo_command_would_revert_another_migration_first():
    """`sequelize-cli db:migrate:undo` reverts the highest-named applied migration: a
    migration to undo named before one that stays is not the one it would revert."""
    applied = ["20240105-customers.js", "20240210-email.js", "20240320-invoices.js"]
    assert undo_out_of_order(["20240210-email.js"], applied) == (
        "20240210-email.js sorts before 20240320-invoices.js, which stays applied: the undo command reverts the "
        "highest-named migration first, so it would undo 20240320-invoices.js instead")
    assert undo_out_of_order(["20240320-invoices.js", "20240210-email.js"], applied) is None  # newest first: exact
    assert undo_out_of_order([], applied) is None
    assert undo_out_of_order(["20240105-customers.js"], ["20240105-customers.js"]) is None


def _with_backup_dir(directory) -> Environment:
    return Environment(name="recorded", target=ReleaseTarget(), app=AppEnvironment(
        database_url="postgresql://u:p@127.0.0.1:1/db", backup_dir=str(directory), backup_passphrase="p"))


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "sub/x.enc", ".hidden.enc"])
def test_a_history_backup_name_that_is_not_a_bare_file_name_is_refused(tmp_path, name):
    """Issue 31: the history's backup name was joined to BACKUP_DIR as it was."""
    from smartrelease.tasks.rollback_inputs import _recorded_backup

    history = [row("1.0.0"), row("1.1.0", backup=name)]
    with pytest.raises(StepFailed, match="is not a file name in BACKUP_DIR"):
        _recorded_backup(_with_backup_dir(tmp_path), history, history[0])


def test_a_backup_replaced_since_the_history_recorded_it_is_refused_before_it_is_read(tmp_path):
    """Issue 31: only the checksum file beside it was checked, which whoever replaced
    the backup could write too."""
    from smartrelease.tasks.backup.crypto import sha256_file
    from smartrelease.tasks.rollback_inputs import _recorded_backup

    backup = tmp_path / "prod-1.1.0.dump.enc"
    backup.write_bytes(b"what was taken")
    recorded = sha256_file(backup)
    backup.write_bytes(b"what was planted")
    (tmp_path / (backup.name + ".sha256")).write_text(f"{sha256_file(backup)}  {backup.name}\n")
    history = [row("1.0.0"), {**row("1.1.0", backup=backup.name), "backup_sha256": recorded}]
    with pytest.raises(StepFailed, match="is not the one the history recorded"):
        _recorded_backup(_with_backup_dir(tmp_path), history, history[0])
