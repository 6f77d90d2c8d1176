"""Preflight `environment`: the runbook's variables are present and sane."""

import os
import stat
from pathlib import Path
from urllib.parse import urlsplit

from blocks.envfile import Environment, app_keys
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from smartrelease.semver import is_semver
from tasks.postgres import parse_database_url
from tasks.runbook_task import runbook_task

STEP = "environment"
REQUIRED = [
    "NODE_ENV", "DATABASE_URL", "JWT_SECRET", "FRONTEND_URL", "CLIENT_URL",
    "CORS_ORIGIN", "BACKUP_PASSPHRASE", "ALLOW_PROD_MIGRATIONS", "BACKUP_DIR", "WAL_ARCHIVE_DIR",
]
MIN_JWT_SECRET = 32
# A secret shorter than this cannot be told apart from ordinary text when redacting.
MIN_SECRET = 8


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


def check_environment(env: Environment, version: str | None = None) -> Finding:
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
    for key in app_keys():
        value = getattr(env.app, key.lower())
        if hasattr(value, "get_secret_value") and value.get_secret_value() and len(value.get_secret_value()) < MIN_SECRET:
            problems.append(f"{key} is shorter than {MIN_SECRET} characters")

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
    if env.target.ca_bundle and not os.path.isfile(env.target.ca_bundle):
        problems.append(f"RELEASE_CA_BUNDLE {env.target.ca_bundle} is not a file")

    try:
        ver = app_version(env, version)
        if not is_semver(ver):
            problems.append(f"app version {ver!r} is not SemVer (MAJOR.MINOR.PATCH)")
    except StepFailed as exc:
        problems.append(exc.reason)
        ver = None

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


environment_task = runbook_task(STEP, timeout_s=10)(check_environment)
