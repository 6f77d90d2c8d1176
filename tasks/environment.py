"""Preflight `environment`: the runbook's variables are present and sane."""

import os
import stat
from pathlib import Path
from urllib.parse import urlsplit

from smartrelease.blocks.envfile import Environment, app_keys
from smartrelease.errors import ConfigError, StepFailed
from smartrelease.report import Finding
from smartrelease.refs import check_version
from smartrelease.tasks.compose_checks import compose_problems
from smartrelease.adapters.http import ssl_context
from smartrelease.adapters.postgres import parse_database_url
from smartrelease.tasks.runbook_task import runbook_task

STEP = "environment"
REQUIRED = [
    "NODE_ENV", "DATABASE_URL", "JWT_SECRET", "FRONTEND_URL", "CLIENT_URL",
    "CORS_ORIGIN", "BACKUP_PASSPHRASE", "ALLOW_PROD_MIGRATIONS", "BACKUP_DIR", "WAL_ARCHIVE_DIR",
]
MIN_JWT_SECRET = 32
# A secret shorter than this cannot be told apart from ordinary text when masking.
MIN_SECRET = 8
# Values that turn up in ordinary text (this tool's messages, libpq's, Docker's): a
# secret equal to one would mask that text and so give itself away by elimination.
COMMON_VALUES = {"connection", "password", "passphrase", "localhost", "postgres", "postgresql", "production",
                 "development", "database", "smartaccounting", "changeme", "secret", "administrator", "metrics",
                 "127.0.0.1", "0.0.0.0"}


def app_version(env: Environment, version: str | None) -> str:
    """The version being released: the parameter, else the app's VERSION file."""
    if version:
        return version.strip()
    if not env.target.app_dir:
        raise StepFailed(STEP, "no app version: pass a version or set RELEASE_APP_DIR to a checkout with a VERSION file")
    path = Path(env.target.app_dir) / "VERSION"
    try:
        return path.read_text().strip()
    except OSError:
        raise StepFailed(STEP, f"cannot read the app's VERSION file at {path}") from None


def _value(env: Environment, key: str) -> str | None:
    value = getattr(env.app, key.lower())
    if value is not None and hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return value or None


def _url_problem(key: str, url: str, schemes: tuple[str, ...]) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # raises on a bad port
    except ValueError:
        return f"{key} does not parse as a URL"
    if parts.scheme not in schemes or not parts.hostname:
        return f"{key} must be an absolute {' or '.join(schemes)} URL"
    return None


def plain_settings(env: Environment) -> dict[str, str]:
    """Every setting that is not a secret, with the parts of DATABASE_URL shown in reports."""
    plain = {key: str(v) for key in app_keys() if (v := getattr(env.app, key.lower())) is not None
             and not hasattr(v, "get_secret_value")}
    plain |= {f"RELEASE_{name.upper()}": str(v) for name in type(env.target).model_fields
              if not name.startswith("_") and (v := getattr(env.target, name)) is not None}
    try:
        db = parse_database_url(env.app.database_url, STEP)
        plain |= {"the DATABASE_URL host": db.host, "the DATABASE_URL user": db.user or "",
                  "the DATABASE_URL database": db.dbname, "the DATABASE_URL port": str(db.port)}
    except StepFailed:
        pass
    if env.registry_credentials is not None:
        plain["RELEASE_REGISTRY_USERNAME"] = env.registry_credentials.username
    plain["the environment name"] = env.name
    return plain


def secret_problems(env: Environment) -> list[str]:
    """Secrets too weak to mask safely: short, common, or found in a plain setting
    (masking would blank that setting, and so tell the secret)."""
    problems = []
    plain = plain_settings(env)
    for what, secret in env.named_secrets().items():
        if len(secret) < MIN_SECRET:
            problems.append(f"{what} is shorter than {MIN_SECRET} characters")
        elif secret.lower() in COMMON_VALUES:
            problems.append(f"{what} is a common value that ordinary text contains; choose another")
        elif holders := [key for key, value in plain.items() if secret in value]:
            problems.append(f"{what} appears in {', '.join(holders)}; a secret must not be part of a plain setting")
    return problems


def check_app_env(env: Environment, version: str | None = None) -> Finding:
    problems: list[str] = []
    warnings: list[str] = []

    missing = [k for k in REQUIRED if not _value(env, k)]
    if missing:
        problems.append("missing or empty: " + ", ".join(missing))

    node_env = _value(env, "NODE_ENV")
    if env.target.production and node_env and node_env != "production":
        problems.append(f"NODE_ENV is {node_env!r}, must be 'production' in a production environment")

    jwt = _value(env, "JWT_SECRET")
    if jwt and len(jwt) < MIN_JWT_SECRET:
        problems.append(f"JWT_SECRET is {len(jwt)} characters, needs at least {MIN_JWT_SECRET}")
    problems += secret_problems(env)

    if _value(env, "DATABASE_URL"):
        try:
            parse_database_url(env.app.database_url, STEP)
        except StepFailed as exc:
            problems.append(exc.reason)
    for key in ("FRONTEND_URL", "CLIENT_URL"):
        if (url := _value(env, key)) and (p := _url_problem(key, url, ("http", "https"))):
            problems.append(p)
    if cors := _value(env, "CORS_ORIGIN"):
        origins = [o.strip() for o in cors.split(",") if o.strip()]
        if "*" in origins:
            if env.target.production:
                problems.append("CORS_ORIGIN is '*', which production must not allow")
        else:
            problems += [p for o in origins if (p := _url_problem("CORS_ORIGIN", o, ("http", "https")))]
    allow = _value(env, "ALLOW_PROD_MIGRATIONS")
    if allow and allow not in ("true", "false"):
        problems.append(f"ALLOW_PROD_MIGRATIONS must be 'true' or 'false', not {allow!r}")
    if bool(_value(env, "METRICS_BASIC_AUTH_USER")) != bool(_value(env, "METRICS_BASIC_AUTH_PASS")):
        problems.append("METRICS_BASIC_AUTH_USER and METRICS_BASIC_AUTH_PASS must be set together")

    if not env.target.public_url:
        problems.append("RELEASE_PUBLIC_URL is not set")
    elif p := _url_problem("RELEASE_PUBLIC_URL", env.target.public_url, ("https",)):
        problems.append(p)
    for setting, bundle in (("RELEASE_CA_BUNDLE", env.target.ca_bundle),
                            ("RELEASE_REGISTRY_CA_BUNDLE", env.target.registry_ca_bundle)):
        try:
            ssl_context(bundle, setting)
        except ConfigError as exc:
            problems.append(str(exc))

    try:
        ver = app_version(env, version)
        check_version(ver, "app version")
    except StepFailed as exc:
        problems.append(exc.reason)
        ver = None
    except ConfigError as exc:
        problems.append(str(exc))
        ver = None

    problems += compose_problems(env)

    if env.target.env_file and os.path.exists(env.target.env_file):
        mode = stat.S_IMODE(os.stat(env.target.env_file).st_mode)
        if mode & 0o077:
            warnings.append(f"env file {env.target.env_file} is readable by group or others (mode {mode:04o}); chmod 600 it")

    if problems:
        raise StepFailed(STEP, "; ".join(problems))
    present = sum(1 for k in app_keys() if _value(env, k))
    detail = f"{present} variables set, app version {ver}, {'production' if env.target.production else 'non-production'}"
    if warnings:
        return Finding(detail=detail + "; warning: " + "; ".join(warnings), warning=True)
    return Finding(detail=detail)


environment_task = runbook_task(STEP, timeout_s=10)(check_app_env)
