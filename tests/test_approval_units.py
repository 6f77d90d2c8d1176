"""The approval form, the stale-plan check and the notification text: pure logic."""

from smartrelease.report import (APPROVED, ApprovalFacts, Report, ReleaseFacts, RollbackFacts, Status,
                                 StepResult)
from smartrelease.flows.approval import description, differences, same_person
from smartrelease.flows.notify import Message, message_of
from smartrelease.tasks.backup.take import BackupRecord
from smartrelease.tasks.rollback_plan import DeployedVersion, MigrationUndo, RollbackPlan

OLD = {"backend": "reg/app/backend@sha256:" + "a" * 64, "frontend": "reg/app/frontend@sha256:" + "b" * 64}
NEW = {"backend": "reg/app/backend@sha256:" + "c" * 64, "frontend": "reg/app/frontend@sha256:" + "d" * 64}


def plan(**changes) -> RollbackPlan:
    values = dict(detail="", environment="prod", version="1.5.0", first_release=False,
                  previous=DeployedVersion(version="1.4.0", images=OLD), backup=None, backup_to_take=True,
                  migrations=[MigrationUndo(name="20261201-add-x.js", has_down=True),
                              MigrationUndo(name="20261202-drop-y.js", has_down=False)],
                  applied_before=["20261101-init.js"])
    return RollbackPlan(**{**values, **changes})


def test_the_form_says_what_will_happen_and_how_it_would_be_undone():
    text = description(plan(), NEW, "0123456789abcdef", "http://ui/artifacts/artifact/1", "alice", 0)
    assert text.startswith("## Approve the release of 1.5.0 to prod?")
    assert "| version | 1.4.0 → 1.5.0 (git `0123456789ab`) |" in text
    assert f"| backend | `sha256:{'a' * 12}` → `sha256:{'c' * 12}` |" in text
    assert "| migrations to run | 20261201-add-x.js, 20261202-drop-y.js |" in text
    assert "| **no down step** | 20261202-drop-y.js: a rollback cannot undo them (restore instead) |" in text
    assert "| backup | a new encrypted backup of the database, read back whole, before launch |" in text
    assert "| rollback plan | [rollback-plan-prod](http://ui/artifacts/artifact/1) |" in text
    assert "| requested by | alice |" in text and "| answer by | 1970-01-01 00:00:00Z" in text


def test_the_form_of_a_release_without_migrations_names_the_backup_it_relies_on():
    backup = BackupRecord(detail="", name="prod-1.4.0-x.dump.enc", path="/b/x", sha256="e" * 64, taken_at=0,
                          taken_now=False)
    text = description(plan(migrations=[], backup=backup, backup_to_take=False), NEW, None, None, None, 0)
    assert "| migrations to run | none |" in text and "no down step" not in text
    assert "| backup | the newest, " in text and " min old: prod-1.4.0-x.dump.enc |" in text
    assert "| requested by | not known |" in text and "| rollback plan | rollback-plan-prod |" in text


def test_the_plan_and_the_form_say_which_service_is_stopped_first_and_why():
    stopping = plan(stop_first={"frontend": "publishes host port(s) 8080"}, stop_first_s={"frontend": 31.0})
    said = ("stop-first: users get errors on frontend (publishes host port(s) 8080) for about 31 s, from its stop "
            "until its new container is healthy (Docker's first health check comes one interval after the start; "
            "longer for an app slow to stop or to start: the report gives the time); everything else is cut over "
            "with no request dropped")
    assert f"| **downtime** | {said} |" in description(stopping, NEW, None, None, None, 0)
    assert f"Launch: **{said}**." in stopping.markdown()
    assert "| **downtime** |" not in description(plan(), NEW, None, None, None, 0)
    assert "Launch: **stop-first" not in plan().markdown()


def test_the_plan_and_the_form_name_the_risk_of_a_frontend_that_resolves_the_backend_once():
    risk = "the frontend resolves the backend once, … some users may get errors"  # compose_checks.pinned_frontend_risk
    pinned = plan(pinned_frontend=risk)
    assert f"| **errors possible** | {risk} |" in description(pinned, NEW, None, None, None, 0)
    assert f"Frontend: **{risk}**; to remove the risk, have the frontend give up on an address that does not answer " \
        "within a second (nginx: `proxy_connect_timeout 1s;`, which tries the next address) and set " \
        "RELEASE_FRONTEND_CONNECT_TIMEOUT_S=1 (docs/zero-downtime.md)." in pinned.markdown()
    assert "errors possible" not in description(plan(), NEW, None, None, None, 0)
    assert "Frontend:" not in plan().markdown()


def test_a_plan_is_stale_when_what_runs_or_the_migrations_table_changed():
    assert differences(plan(), DeployedVersion(version="1.4.0", images=OLD), ["20261101-init.js"]) == []
    moved = {**OLD, "backend": NEW["backend"]}
    assert differences(plan(), DeployedVersion(version="1.4.1", images=moved), ["20261101-init.js"]) == [
        f"backend runs {NEW['backend']} (the plan saw {OLD['backend']})"]
    assert differences(plan(), None, ["20261101-init.js", "by-hand.js"]) == [
        "backend runs nothing known by digest (the plan saw " + OLD["backend"] + ")",
        "frontend runs nothing known by digest (the plan saw " + OLD["frontend"] + ")",
        "the migrations table changed: +by-hand.js"]
    assert differences(plan(), DeployedVersion(version="1.4.0", images=OLD), []) == [
        "the migrations table changed: -20261101-init.js"]


def test_the_same_person_ignores_case_and_spaces_but_an_unknown_requester_is_nobody():
    assert same_person(" Alice ", "alice") and not same_person("alice", "bob") and not same_person("alice", None)


def test_a_failed_release_message_names_the_step_the_reason_and_the_time_to_recover():
    report = Report(flow="release", environment="prod", facts=ReleaseFacts(
        version="1.5.0", previous_version="1.4.0",
        rollback=RollbackFacts(to_version="1.4.0", recovered=True, time_to_recover_s=7.37)),
        results=[StepResult(name="wait-ready", status=Status.FAILED, detail="backend exited (code 1)\nlog", duration_ms=1)])
    message = message_of(report, "release failed, rolled back", "http://ui/runs/flow-run/1")
    assert message.subject() == "[prod] release failed, rolled back: 1.4.0 → 1.5.0"
    assert message.body().splitlines() == ["[prod] release failed, rolled back: 1.4.0 → 1.5.0",
                                           "wait-ready: backend exited (code 1) log",
                                           "Rolled back to 1.4.0 and verified in 7.4 s.",
                                           "Run: http://ui/runs/flow-run/1"]


def test_a_rollback_not_recovered_says_what_to_do_and_a_long_reason_keeps_its_end():
    report = Report(flow="release", environment="prod", facts=ReleaseFacts(
        version="1.5.0", previous_version="1.4.0",
        rollback=RollbackFacts(to_version="1.4.0", recovered=False, instructions=["Restore prod-1.5.0.dump.enc."])),
        results=[StepResult(name="verify", status=Status.FAILED, detail="x" * 500 + " the real error", duration_ms=1)])
    lines = message_of(report, "release failed, NOT recovered").body().splitlines()
    assert lines[1].startswith("verify: xxx") and lines[1].endswith(" the real error") and " … " in lines[1]
    assert len(lines[1]) < 320 and lines[2] == "Rollback to 1.4.0 NOT recovered: Restore prod-1.5.0.dump.enc."


def test_a_rejected_release_message_says_who_and_why():
    approval = ApprovalFacts(decision="rejected", approver="alice", reason="month-end", answered_at="t")
    report = Report(flow="release", environment="prod", facts=ReleaseFacts(version="1.5.0", approval=approval),
                    results=[])
    assert message_of(report, "release rejected").body().splitlines()[1] == "approval: rejected by alice: month-end at t"
    assert ApprovalFacts(decision=APPROVED, approver="bob", reason="ok | go", answered_at="t",
                         refused=["alice: self"]).line() == "approved by bob: ok / go at t; refused alice: self"


def test_a_message_masks_every_known_secret():
    from smartrelease.redact import remember

    remember(["hunter2-SENTINEL"])
    body = Message(event="release failed", environment="prod", what="db said password hunter2-SENTINEL").body()
    assert "hunter2-SENTINEL" not in body and "***" in body


def test_a_notification_blocks_own_secrets_are_masked_once_it_is_loaded():
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from smartrelease.flows.notify import _remember_secrets
    from smartrelease.redact import mask

    block = CustomWebhookNotificationBlock(name="x", url="http://127.0.0.1:1/h",
                                           secrets={"token": "tok-SENTINEL-123", "retries": 5})
    _remember_secrets(block)
    assert mask("401 for token tok-SENTINEL-123") == "401 for token ***"
