"""Reading a dotenv file into the two blocks, saving them, and loading them back."""

import os
import re
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values
from pydantic import ValidationError

from blocks.app_environment import AppEnvironment
from blocks.release_target import ReleaseTarget
from smartrelease.errors import ConfigError

RELEASE_PREFIX = "RELEASE_"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# Keys set by the tool itself, not read from the file.
_INTERNAL_TARGET_FIELDS = {"env_file"}


@dataclass(frozen=True)
class Environment:
    """One environment's configuration, as the flows see it."""

    name: str
    app: AppEnvironment
    target: ReleaseTarget

    def secret_values(self) -> list[str]:
        return self.app.secret_values()


def app_keys() -> list[str]:
    return [name.upper() for name in AppEnvironment.model_fields if not name.startswith("_")]


def release_keys() -> list[str]:
    return [
        RELEASE_PREFIX + name.upper()
        for name in ReleaseTarget.model_fields
        if name not in _INTERNAL_TARGET_FIELDS and not name.startswith("_")
    ]


def name_from_env_file(path: Path) -> str:
    """`.env.prod` -> `prod`, `prod.env` -> `prod`, `/x/.env` -> `default`."""
    base = path.name
    if base.startswith(".env."):
        stem = base[len(".env.") :]
    elif base.endswith(".env"):
        stem = base[: -len(".env")]
    else:
        stem = base
    slug = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")
    return slug or "default"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"invalid environment name {name!r}: use lower-case letters, digits and dashes")
    return name


def parse_env_file(path: str | os.PathLike) -> Environment:
    """Parse an env file into the two blocks without saving anything."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"env file not found: {path}")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"env file not readable: {path}")
    try:
        values = dotenv_values(path, interpolate=False)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"env file unreadable: {path}: {type(exc).__name__}") from None

    known_app, known_release = set(app_keys()), release_keys()
    app_fields = {k.lower(): v for k, v in values.items() if k in known_app and v is not None}
    target_fields: dict[str, object] = {}
    for key, value in values.items():
        if not key.startswith(RELEASE_PREFIX):
            continue
        if key not in known_release:
            raise ConfigError(f"{path}: unknown setting {key} (known: {', '.join(known_release)})")
        if value is not None and value != "":
            target_fields[key[len(RELEASE_PREFIX) :].lower()] = value
    target_fields["env_file"] = str(path.resolve())

    try:
        app = AppEnvironment(**app_fields)
        target = ReleaseTarget(**target_fields)
    except ValidationError as exc:
        # Name the key and the rule, never the value: it may be a secret.
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        key = (RELEASE_PREFIX + field.upper()) if field in ReleaseTarget.model_fields else field.upper()
        raise ConfigError(f"{path}: {key}: {first['msg']}") from None
    return Environment(name=name_from_env_file(path), app=app, target=target)


def import_env_file(path: str | os.PathLike, name: str | None = None) -> Environment:
    """Parse an env file and save (overwrite) both blocks under `name`."""
    env = parse_env_file(path)
    name = check_name(name or env.name)
    env.app.save(name, overwrite=True)
    env.target.save(name, overwrite=True)
    return Environment(name=name, app=env.app, target=env.target)


def load_environment(name: str) -> Environment:
    check_name(name)
    try:
        app = AppEnvironment.load(name)
        target = ReleaseTarget.load(name)
    except ValueError:
        raise ConfigError(
            f"no blocks named {name!r}: run `smartrelease blocks import --env-file FILE --name {name}`"
        ) from None
    return Environment(name=name, app=app, target=target)

