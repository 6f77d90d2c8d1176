"""The runbook's contingency after a bad migration: "set ALLOW_PROD_MIGRATIONS=false".
`smartrelease guard off|on --name ENV` flips it in the environment's saved block."""

from smartrelease.blocks.app_environment import AppEnvironment
from smartrelease.record.lock import environment_lock, me
from smartrelease.errors import ConfigError
from smartrelease.refs import check_environment_name


def set_prod_migrations(name: str, allow: bool) -> str:
    """Save ALLOW_PROD_MIGRATIONS in block `name`; returns a one-line account."""
    check_environment_name(name)
    try:
        app = AppEnvironment.load(name)
    except ValueError:
        raise ConfigError(f"no blocks named {name!r}: run `smartrelease blocks import --env-file FILE --name {name}`") from None
    # Not while a release reads it: its migration guard would have seen the old value.
    with environment_lock(name, me(f"guard {'on' if allow else 'off'}")):
        app = AppEnvironment.load(name)
        before = app.allow_prod_migrations
        app.allow_prod_migrations = "true" if allow else "false"
        app.save(name, overwrite=True)
    # The env file is the source the CLI imports on every `--env-file` run; say so.
    return (f"ALLOW_PROD_MIGRATIONS={app.allow_prod_migrations} saved in block {name!r} (was {before or 'unset'}). "
            "Runs from the Prefect UI and schedules use it from now on; change the env file too, or the next "
            "`--env-file` run imports its value again.")
