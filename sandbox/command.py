"""`smartrelease sandbox up|down|status|destroy`: the sandbox's command, added to the
product's CLI as a plugin (the `smartrelease.commands` entry point in pyproject.toml),
so that the CLI never imports the stand-in it rehearses on."""

from pathlib import Path


def register(sub) -> None:
    """Add the `sandbox` subcommand to the CLI's subparsers `sub`."""
    sb = sub.add_parser("sandbox", help="the local production-like sandbox")
    sb.add_argument("action", choices=["up", "down", "status", "destroy"],
                    help="destroy: down, then delete the sandbox's state and env files")
    sb.add_argument("--dev", action="store_true", help="with up: also a dev environment beside it (.env.sandbox-dev)")
    sb.add_argument("--external-db", action="store_true",
                    help="with up: the database on this host, outside Compose (default: a db service in the project)")
    sb.add_argument("--app", metavar="PATH", help="with up: your own app's checkout instead of the stand-in "
                                                   "(its smartrelease.env holds its RELEASE_ keys)")
    sb.add_argument("--server", action="store_true", help="with up: also the control plane: a Prefect server, "
                                                          "the environments' deployments, a worker per environment")
    sb.set_defaults(handler=run)


def run(args) -> int:
    from smartrelease.sandbox import manager

    if args.action == "up":
        return manager.up(dev=args.dev, external_db=args.external_db, app=args.app and Path(args.app),
                          server=args.server)
    return {"down": manager.down, "status": manager.status, "destroy": manager.destroy}[args.action]()
