"""`smartrelease`: the command line. Exit codes: 0 ok, 1 a check or step failed,
2 a usage or configuration error (one line on standard error)."""

import argparse
import gc
import json
import os
import sys
from importlib.metadata import entry_points

from smartrelease import __version__
from smartrelease.errors import ConfigError

PLUGINS = "smartrelease.commands"  # entry points: a function adding a subcommand, with its handler as the default

STRATEGIES = ("undo", "restore", "none")  # tasks.rollback_inputs.STRATEGIES, without importing Prefect for --help

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (exit 2), not the usage block."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog.removeprefix('smartrelease').strip() or 'usage'}: {message} "
                          f"(see `{self.prog} --help`)")


def _env_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env-file", required=True, help="imported into the environment's blocks first")


def _no_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-wait", dest="wait", action="store_false",
                   help="when another run is changing the environment, fail at once naming it (default: wait)")


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on standard output")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="smartrelease", description="SmartAccounting release automation (Prefect flows).")
    p.add_argument("--version", action="version", version=f"smartrelease {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    blocks = sub.add_parser("blocks", help="manage the Prefect blocks holding an environment's settings and secrets")
    blocks_sub = blocks.add_subparsers(dest="blocks_command", required=True)
    imp = blocks_sub.add_parser("import", help="read a dotenv file and save (overwrite) the environment's blocks")
    imp.add_argument("--env-file", required=True)
    imp.add_argument("--name", help="environment name (default: from the file name, .env.prod -> prod)")

    pre = sub.add_parser("preflight", help="run the preflight checklist against an environment")
    _env_file(pre)
    _json(pre)

    rel = sub.add_parser("release", help="release a version: preflight, build-pin, launch, wait-ready, smoke, metrics, verify")
    _env_file(rel)
    rel.add_argument("--version", dest="release_version", metavar="X", help="the SemVer to release (default: the app checkout's VERSION)")
    rel.add_argument("--from", dest="from_tag", metavar="TAG",
                     help="release the images this registry tag names, by digest (e.g. a dev build's dev-<sha>)")
    rel.add_argument("--db-strategy", choices=STRATEGIES, default="undo",
                     help="what an automatic rollback does to the database (default: undo)")
    _no_wait(rel)
    rel.add_argument("--stop-first", action="store_true",
                     help="stop the old containers before starting the new ones (a release that cannot run beside "
                          "the old version): users get errors until it is ready; default: a cutover with no downtime")
    rel.add_argument("--wait-approval", action="store_true",
                     help="an environment with RELEASE_APPROVAL=required: print the run's URL when the plan is "
                          "ready and wait here for the approval (`smartrelease approve`, or the form in the UI)")
    _json(rel)

    ad = sub.add_parser("adopt", help="take over an environment released by hand: its running images pushed as "
                                      "adopted-<version> (the version the app reports), recorded in the history")
    _env_file(ad)
    _no_wait(ad)
    _json(ad)

    ap = sub.add_parser("approve", help="answer a release waiting for approval (over the Prefect API)")
    ap.add_argument("run_id", metavar="RUN_ID", help="the flow run's id (in its URL)")
    ap.add_argument("--reject", action="store_true", help="reject: the release ends with nothing changed")
    ap.add_argument("--reason", required=True, help="why; recorded in the report and the history")
    ap.add_argument("--as", dest="approver", metavar="NAME",
                    help="the name recorded as the approver (default: $SMARTRELEASE_USER, else your login)")

    bd = sub.add_parser("build", help="build and push the app checkout as dev-<short git SHA> (for a dev environment)")
    _env_file(bd)
    _json(bd)

    pm = sub.add_parser("promote", help="give a dev build's digests a SemVer tag, without rebuilding, if they passed in dev")
    pm.add_argument("--env-file", required=True, help="the target environment (e.g. .env.prod), imported first")
    pm.add_argument("--from", dest="from_tag", required=True, metavar="dev-SHA", help="the dev tag to promote")
    pm.add_argument("--version", dest="promote_version", metavar="X", help="the SemVer to give it (default: the app checkout's VERSION)")
    pm.add_argument("--force", action="store_true", help="promote without a passing dev run (needs --reason)")
    pm.add_argument("--reason", help="why --force is needed; recorded in the ticket and the history")
    _no_wait(pm)
    _json(pm)

    rb = sub.add_parser("rollback", help="put the previous release back: database (undo, restore or none), images by digest, verify")
    _env_file(rb)
    rb.add_argument("--to", dest="to_version", metavar="VERSION", help="the release to go back to (default: the one before the running one)")
    rb.add_argument("--db-strategy", choices=STRATEGIES, default="undo",
                    help="undo: undo the migrations applied since (after a safety backup); restore: restore the "
                         "pre-release backup (later writes are lost); none: leave the database (default: undo)")
    rb.add_argument("--stop-first", action="store_true",
                    help="stop the running containers before starting the previous ones: users get errors until "
                         "they are ready; default: a cutover with no downtime")
    _no_wait(rb)
    _json(rb)

    guard = sub.add_parser("guard", help="turn production migrations off or on (ALLOW_PROD_MIGRATIONS in the environment's block)")
    guard.add_argument("state", choices=["off", "on"])
    guard.add_argument("--name", required=True, help="the environment (block) name, e.g. prod")

    ver = sub.add_parser("verify", help="post-deploy verification (read only): health, ready, version, auth health, metrics")
    _env_file(ver)
    ver.add_argument("--expect-version", metavar="X", help="the version that must be running (default: the last released)")
    _no_wait(ver)
    _json(ver)

    dr = sub.add_parser("drill", help="restore drill: the newest backup restored into a scratch database and "
                                      "checked (migrations, tables, schema), with RPO and RTO; the live database "
                                      "is not touched")
    _env_file(dr)
    _json(dr)

    ul = sub.add_parser("unlock", help="free an environment's lock held by a run that died (recorded in the history)")
    ul.add_argument("--env", dest="env_name", required=True, metavar="NAME", help="the environment, e.g. prod")
    ul.add_argument("--reason", required=True, help="why; recorded in the history")

    srv = sub.add_parser("server", help="a self-hosted Prefect server on PostgreSQL, with its UI")
    srv.add_argument("action", choices=["up", "down", "status"])

    dp = sub.add_parser("deployments", help="the deployments on the Prefect server: one per flow and environment")
    dp.add_argument("action", choices=["apply", "yaml"],
                    help="apply: make each environment's lock, work pool and deployments (prefect deploy --all); "
                         "yaml: print the prefect.yaml for the environments")
    dp.add_argument("--env", dest="environments", action="append", required=True, metavar="NAME",
                    help="an environment whose blocks are saved (repeat for several)")

    wk = sub.add_parser("worker", help="run an environment's Prefect worker here (on the host of its Docker Engine)")
    wk.add_argument("--env", dest="env_name", required=True, metavar="NAME")

    tr = sub.add_parser("trigger", help="start a flow run of an environment's deployment over the Prefect API (CI)")
    tr.add_argument("flow", help="preflight, release, rollback, verify, drill, build or promote")
    tr.add_argument("--env", dest="env_name", required=True, metavar="NAME")
    tr.add_argument("-p", "--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                    help="a parameter of the flow (JSON values are read as JSON); repeatable")
    tr.add_argument("--wait", action="store_true", help="follow the run to its end; exit 0 only if it completed")
    tr.add_argument("--timeout", type=float, metavar="S", help="with --wait: stop following after S seconds (exit 1)")
    tr.add_argument("--idempotency-key", metavar="K",
                    help="e.g. the CI pipeline's id: a retried job attaches to the run it started")
    _json(tr)

    for plugin in entry_points(group=PLUGINS):  # the sandbox's command, beside the product (sandbox/command.py)
        plugin.load()(sub)
    return p


def _told(report, as_json: bool, *, checks: bool = False) -> int:
    """A command's report printed (as text, or as JSON: preflight's checks, or the
    release JSON of the others), and the exit code it means."""
    if as_json:
        print(json.dumps({"ok": report.ok, "checks": [r.model_dump(mode="json") for r in report.results]} if checks
                         else report.release_json()))
    else:
        print(report.text())
    return EXIT_OK if report.ok else EXIT_FAILED


def _cmd_blocks_import(args) -> int:
    from smartrelease.refs import check_environment_name

    if args.name is not None:
        check_environment_name(args.name)
    from smartrelease.record.lock import import_environment

    env = import_environment(args.env_file, args.name)
    print(f"saved blocks {env.name!r} (smartaccounting-app-environment, smartaccounting-release-target)")
    return EXIT_OK


def _progress(flow_name: str, step) -> None:
    """A step of the run, as it finishes, on standard error (standard output keeps the
    report, or the JSON)."""
    print(f"{flow_name:9} {step.progress_line()}", file=sys.stderr, flush=True)


def _run(flow, args, *, progress: bool = False, **parameters):
    """Import the env file, run the flow in this process, return its report; with
    `progress`, each step is printed as it finishes."""
    import time

    from smartrelease.adapters.prefect_api import without_flow_heartbeat
    from smartrelease.record.lock import import_environment

    from smartrelease.record import journal
    from smartrelease.flows.steps import observers

    env = import_environment(args.env_file)
    if progress:
        observers.append(_progress)
    started_ns = time.time_ns()
    try:
        with without_flow_heartbeat():  # its terminal watches the run (adapters/prefect_api.py)
            state = flow(environment=env.name, return_state=True, **parameters)
    except journal.UNREACHABLE as exc:  # Prefect could not tell the server the run's end
        return _kept_report(flow.name, env.name, started_ns, exc)
    finally:
        if progress:
            observers.remove(_progress)
    report = state.result(raise_on_failure=False)
    if isinstance(report, ConfigError):
        raise report
    if isinstance(report, BaseException):  # the flow itself broke, not a step
        raise ConfigError(f"{flow.name} could not run: {type(report).__name__}: {report}")
    return report


def _kept_report(flow_name: str, environment: str, started_ns: int, exc: Exception):
    """The report of a run that ended while the Prefect server was away, read back from
    the journal it kept it in (record/journal.py); else the gap, as a ConfigError."""
    from smartrelease.record import journal
    from smartrelease.report import Report

    found = journal.written_since(environment, started_ns)
    if found is None:
        raise ConfigError(f"{flow_name}: {journal.unreachable_reason(exc)}, and the run kept no report: see the "
                          "environment itself, and its history once the server is back")
    path, entry = found
    print(f"{flow_name}: {journal.unreachable_reason(exc)} at the run's end; its report below and its history "
          f"row are kept in {path}, published by the next run on this host that reads the history", file=sys.stderr)
    return Report.model_validate(entry.report)


def _cmd_preflight(args) -> int:
    from smartrelease.flows.preflight import preflight

    report = _run(preflight, args)
    return _told(report, args.json, checks=True)


def _semver_or_exit(value: str | None, what: str) -> None:
    from smartrelease.refs import check_version

    if value is not None:
        check_version(value, what)


def _cmd_release(args) -> int:
    from smartrelease.refs import check_tag

    # Arguments first: they need no Prefect (seconds to import) to be refused.
    _semver_or_exit(args.release_version, "--version")
    if args.from_tag is not None:
        check_tag(args.from_tag, "--from")
    from smartrelease.blocks import parse_env_file
    from smartrelease.flows.release import release, release_inputs

    env = parse_env_file(args.env_file)
    release_inputs(env, args.release_version, None, args.db_strategy)  # before anything is saved
    if env.target.approval_required and not args.wait_approval:
        raise ConfigError(f"{env.name} needs an approval for each release (RELEASE_APPROVAL"
                          f"{'' if env.target.approval else ' unset, and a production environment'}): pass "
                          "--wait-approval to wait here for it, or trigger the release deployment")
    digests = _tag_digests(env, args.from_tag) if args.from_tag else None
    report = _run(release, args, progress=True, version=args.release_version, digests=digests,
                  db_strategy=args.db_strategy, wait=args.wait, stop_first=args.stop_first)
    return _told(report, args.json)


def _cmd_adopt(args) -> int:
    from smartrelease.flows.adopt import adopt

    report = _run(adopt, args, progress=True, wait=args.wait)
    return _told(report, args.json)


def _tag_digests(env, tag: str) -> dict[str, str]:
    """{service: digest} that `tag` names in the registry (read only); exit 2 when missing."""
    from smartrelease.errors import StepFailed
    from smartrelease.blocks.app_contract import ROLES
    from smartrelease.tasks.build_pin import registry_for, repository_path
    from smartrelease.tasks.promote_tag import resolve_tag
    from smartrelease.adapters.registry import RegistryError

    try:
        with registry_for(env) as registry:
            return {s: resolve_tag(registry, repository_path(env, s), tag) for s in ROLES}
    except (StepFailed, RegistryError) as exc:
        raise ConfigError(f"--from {tag}: {getattr(exc, 'reason', exc)}") from None


def _cmd_approve(args) -> int:
    from smartrelease.deployments.approve import answer, parse_run_id
    from smartrelease.flows.requester import user

    run_id = parse_run_id(args.run_id)
    print(answer(run_id, not args.reject, args.reason, args.approver or user()))
    return EXIT_OK


def _cmd_verify(args) -> int:
    _semver_or_exit(args.expect_version, "--expect-version")
    from smartrelease.blocks import parse_env_file
    from smartrelease.record.history import last_release
    from smartrelease.flows.verify import verify

    name = parse_env_file(args.env_file).name
    if not args.expect_version and last_release(name) is None:
        raise ConfigError(f"no expected version for {name}: pass --expect-version, or release first")
    report = _run(verify, args, expect_version=args.expect_version, wait=args.wait)
    return _told(report, args.json)


def _cmd_drill(args) -> int:
    from smartrelease.flows.drill import drill

    report = _run(drill, args, progress=True)
    return _told(report, args.json)


def _cmd_build(args) -> int:
    from smartrelease.flows.build import build

    report = _run(build, args)
    return _told(report, args.json)


def _cmd_promote(args) -> int:
    from smartrelease.refs import check_dev_tag

    _semver_or_exit(args.promote_version, "--version")
    if args.force != bool(args.reason):
        raise ConfigError("--force and --reason go together: say why the dev evidence is skipped")
    check_dev_tag(args.from_tag, "--from")
    from smartrelease.flows.promote import promote

    report = _run(promote, args, progress=True, from_tag=args.from_tag, version=args.promote_version,
                  force_reason=args.reason if args.force else None, wait=args.wait)
    return _told(report, args.json)


def _cmd_rollback(args) -> int:
    _semver_or_exit(args.to_version, "--to")
    from smartrelease.blocks import parse_env_file
    from smartrelease.record.history import load_history, publish_kept
    from smartrelease.flows.rollback import rollback
    from smartrelease.record.history import deployed

    name = parse_env_file(args.env_file).name
    for line in publish_kept(name):  # what this host's journal kept, first
        print(line, file=sys.stderr)
    history = load_history(name)
    stack = deployed(history.rows)
    if not stack:
        raise ConfigError(f"no release of {name} in the history: nothing to roll back to"
                          + (f" ({history.summary()})" if history.skipped else ""))
    if args.to_version and args.to_version not in [row["version"] for row in stack]:
        raise ConfigError(f"--to {args.to_version}: not a release of {name} that can be gone back to "
                          f"({', '.join(row['version'] for row in stack)})")
    report = _run(rollback, args, progress=True, to_version=args.to_version, db_strategy=args.db_strategy,
                  wait=args.wait, stop_first=args.stop_first)
    return _told(report, args.json)


def _cmd_guard(args) -> int:
    from smartrelease.refs import check_environment_name

    check_environment_name(args.name)
    from smartrelease.flows.guard import set_prod_migrations

    print(set_prod_migrations(args.name, allow=args.state == "on"))
    return EXIT_OK


def _cmd_unlock(args) -> int:
    from smartrelease.refs import check_environment_name

    check_environment_name(args.env_name)
    if not args.reason.strip():
        raise ConfigError("unlock: --reason must say why; it is recorded in the history")
    from smartrelease.record.lock import unlock

    print(unlock(args.env_name, args.reason))
    return EXIT_OK


def _cmd_server(args) -> int:
    from smartrelease.deployments import server

    if args.action == "status":
        ok, text = server.status()
        print(text)
        return EXIT_OK if ok else EXIT_FAILED
    print(server.up() if args.action == "up" else server.down())
    return EXIT_OK


def _cmd_deployments(args) -> int:
    from smartrelease.refs import check_environment_name

    environments = [check_environment_name(e) for e in args.environments]
    if args.action == "yaml":
        from smartrelease.deployments.catalog import prefect_yaml

        print(prefect_yaml(environments), end="")
        return EXIT_OK
    from smartrelease.deployments.apply import apply, worker_hint

    print(f"{apply(environments)}; {worker_hint(environments)}")
    return EXIT_OK


def _cmd_worker(args) -> int:
    from smartrelease.refs import check_environment_name

    check_environment_name(args.env_name)
    from smartrelease.deployments.apply import ensure_pool, worker_command

    ensure_pool(args.env_name)
    command = worker_command(args.env_name)
    os.chdir(command.cwd)
    os.execve(command.argv[0], list(command.argv), dict(command.env))  # the worker is this process now


def _cmd_trigger(args) -> int:
    from smartrelease.refs import check_environment_name

    check_environment_name(args.env_name)
    if args.timeout is not None and (args.timeout <= 0 or not args.wait):
        raise ConfigError("--timeout needs --wait and a number of seconds above 0")
    from smartrelease.deployments import trigger as t

    parameters = t.parse_parameters(args.params)
    started = t.trigger(args.flow, args.env_name, parameters, args.idempotency_key)
    verb = "attached to" if started.attached else "started"
    print(f"{verb} {started.name} ({started.flow_run_id}): {started.url}", file=sys.stderr, flush=True)
    run = t.read_flow_run(started.flow_run_id)
    if args.wait:
        run = t.follow(started.flow_run_id, args.timeout, _progress)
    state = run.state.name if run.state else "Unknown"
    final = bool(run.state and run.state.is_final())
    message = (run.state.message or "") if run.state else ""
    if args.wait and not final:
        state, message = "TimedOut", f"still {state} after {args.timeout:g} s (the run goes on: {started.url})"
    if args.json:
        print(json.dumps({"flow_run_id": str(started.flow_run_id), "name": started.name, "url": started.url,
                          "attached": started.attached, "state": state, "message": message}))
    else:
        print(f"{started.name}: {state}" + (f": {message}" if message else ""))
    if not args.wait:
        return EXIT_OK
    return EXIT_OK if t.succeeded(run) else EXIT_FAILED


HANDLERS = {"blocks": _cmd_blocks_import, "preflight": _cmd_preflight, "release": _cmd_release, "approve": _cmd_approve, "verify": _cmd_verify,
            "drill": _cmd_drill, "build": _cmd_build, "promote": _cmd_promote, "rollback": _cmd_rollback, "adopt": _cmd_adopt, "guard": _cmd_guard,
            "unlock": _cmd_unlock, "server": _cmd_server, "deployments": _cmd_deployments, "worker": _cmd_worker,
            "trigger": _cmd_trigger}


def main(argv: list[str] | None = None) -> int:
    from smartrelease.adapters.prefect_api import quiet_exit_notices

    quiet_exit_notices()
    try:
        args = _parser().parse_args(argv)
        from smartrelease.deployments.server import use_local_credentials

        use_local_credentials()  # before Prefect reads its settings
        if getattr(args, "env_file", None) is not None:  # refused before seconds of importing Prefect
            from smartrelease.refs import check_env_file

            check_env_file(args.env_file)
        handler = getattr(args, "handler", None) or HANDLERS[args.command]  # a plugin's, or ours
        return handler(args)
    except ConfigError as exc:
        print(f"smartrelease: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:
        if getattr(getattr(exc, "response", None), "status_code", None) == 401:
            print(f"smartrelease: the Prefect server at {os.environ.get('PREFECT_API_URL')} refused this client's "
                  "credentials (401): set PREFECT_API_AUTH_STRING to the server's (on its host, "
                  "SMARTRELEASE_SERVER_DIR/api-auth)", file=sys.stderr)
            return EXIT_CONFIG
        # A bug or an unforeseen failure: one masked line; the traceback on request.
        if os.environ.get("SMARTRELEASE_TRACEBACK"):
            raise
        from smartrelease.redact import mask

        print(f"smartrelease: unexpected error: {type(exc).__name__}: {_one_line(mask(str(exc)))} "
              "(set SMARTRELEASE_TRACEBACK=1 to see where)", file=sys.stderr)
        return EXIT_FAILED


def _one_line(text: str) -> str:
    return " ".join(text.split("\n")).strip()


def entry() -> None:
    """The `smartrelease` command: main(), then the process's end without Python's
    last collections. Importing the flows leaves some 140,000 objects the collector
    tracks, and collecting them at the interpreter's teardown took 0.3 s of every
    command (docs/benchmarks-floor.md). Frozen, they go with the process; exit handlers still
    run (Prefect sends its queued logs and events) and files still close. Not in
    main(), which tests call in their own process."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
