"""Reading a dotenv file into the two blocks, saving them, and loading them back."""

import difflib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dotenv.parser import parse_stream
from pydantic import SecretStr, ValidationError

from smartrelease.blocks.app_environment import AppEnvironment
from smartrelease.blocks.registry_credentials import OLD_SLUG, RegistryCredentials
from smartrelease.blocks.release_target import ReleaseTarget
from prefect.exceptions import ObjectNotFound
from smartrelease.errors import ConfigError
from smartrelease.redact import remember
from smartrelease.refs import check_env_file, check_environment_name

RELEASE_PREFIX = "RELEASE_"
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LEADING_KEY = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)")
# Keys set by the tool itself, not read from the file.
_INTERNAL_TARGET_FIELDS = {"env_file"}
# Registry login, saved as a RegistryCredentials block.
REGISTRY_USERNAME, REGISTRY_PASSWORD = "RELEASE_REGISTRY_USERNAME", "RELEASE_REGISTRY_PASSWORD"


@dataclass(frozen=True)
class Environment:
    """One environment's configuration, as the flows see it."""

    name: str
    app: AppEnvironment
    target: ReleaseTarget
    registry_credentials: RegistryCredentials | None = None

    def named_secrets(self) -> dict[str, str]:
        """Each secret by what it is called: the app's, and the registry password."""
        named = self.app.named_secrets()
        if self.registry_credentials is not None:
            named[REGISTRY_PASSWORD] = self.registry_credentials.password.get_secret_value()
        return named

    def secret_values(self) -> list[str]:
        values = self.app.secret_values()
        if self.registry_credentials is not None:
            values.append(self.registry_credentials.password.get_secret_value())
        return values


def app_keys() -> list[str]:
    return [name.upper() for name in AppEnvironment.model_fields if not name.startswith("_")]


def release_keys() -> list[str]:
    return [
        RELEASE_PREFIX + name.upper()
        for name in ReleaseTarget.model_fields
        if name not in _INTERNAL_TARGET_FIELDS and not name.startswith("_")
    ] + [REGISTRY_USERNAME, REGISTRY_PASSWORD]


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


def secret_keys() -> set[str]:
    """The keys whose values are secrets: the SecretStr fields (`SecretStr | None`) and the registry password."""
    return {name.upper() for name, f in AppEnvironment.model_fields.items()
            if SecretStr in getattr(f.annotation, "__args__", (f.annotation,))} | {REGISTRY_PASSWORD}


def read_values(path: Path) -> dict[str, str | None]:
    """KEY=VALUE pairs of a dotenv file (python-dotenv's grammar, no interpolation).
    A line that is not KEY=VALUE is refused by its line number and, when it is one
    of ours, its key: never its text, which may be a secret typed in the wrong place."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"env file unreadable: {path}: {type(exc).__name__}") from None
    known = set(app_keys()) | set(release_keys())

    def ours(key: str | None) -> str:
        return f" {key}" if key and (key in known or key.startswith(RELEASE_PREFIX)) else ""

    values: dict[str, str | None] = {}
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        leading = _LEADING_KEY.match(binding.original.string)
        if binding.error:
            raise ConfigError(f"{path}: line {line}{ours(leading and leading[1])}: cannot be parsed "
                              "(expected KEY=VALUE; an unclosed quote?)")
        if binding.key is None:  # a blank line or a comment
            continue
        if not _KEY.fullmatch(binding.key):
            raise ConfigError(f"{path}: line {line}{ours(leading and leading[1])}: not KEY=VALUE "
                              "(a ':' or another character where '=' belongs?)")
        if binding.value is None and (binding.key in known or binding.key.startswith(RELEASE_PREFIX)):
            raise ConfigError(f"{path}: line {line} {binding.key}: no '=' (expected {binding.key}=VALUE)")
        values[binding.key] = binding.value
    secret = secret_keys()
    remember(v for k, v in values.items() if k in secret)
    return values


def parse_env_file(path: str | os.PathLike) -> Environment:
    """Parse an env file into the two blocks without saving anything."""
    path = check_env_file(path)
    values = read_values(path)

    known_app, known_release = set(app_keys()), release_keys()
    app_fields = {k.lower(): v for k, v in values.items() if k in known_app and v is not None}
    target_fields: dict[str, object] = {}
    for key, value in values.items():
        if not key.startswith(RELEASE_PREFIX):
            continue
        if key not in known_release:
            close = difflib.get_close_matches(key, known_release, n=1)
            raise ConfigError(f"{path}: unknown setting {key}" + (f" (did you mean {close[0]}?)" if close else
                                                                   " (docs/configuration.md lists the RELEASE_ settings)"))
        if value is not None and value != "" and key not in (REGISTRY_USERNAME, REGISTRY_PASSWORD):
            target_fields[key[len(RELEASE_PREFIX) :].lower()] = value
    target_fields["env_file"] = str(path.resolve())

    try:
        app = AppEnvironment(**app_fields)
        target = ReleaseTarget(**target_fields)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_invalid(exc)}") from None
    env = Environment(name=name_from_env_file(path), app=app, target=target,
                      registry_credentials=_registry_credentials(path, values, target))
    remember(env.secret_values())
    return env


def _registry_credentials(path: Path, values: dict, target: ReleaseTarget) -> RegistryCredentials | None:
    username, password = values.get(REGISTRY_USERNAME), values.get(REGISTRY_PASSWORD)
    if not username and not password:
        return None
    if not (username and password and target.registry):
        raise ConfigError(f"{path}: {REGISTRY_USERNAME} and {REGISTRY_PASSWORD} go together, with RELEASE_REGISTRY")
    return RegistryCredentials(username=username, password=password, registry_url=target.registry)


def import_env_file(path: str | os.PathLike, name: str | None = None) -> Environment:
    """Parse an env file and save (overwrite) both blocks under `name`. (The
    environment's lock is made with them by record/lock.py's `import_environment`.)"""
    env = parse_env_file(path)
    name = check_environment_name(name or env.name)
    for block in (env.app, env.target, env.registry_credentials):
        if block is not None:
            _save_if_changed(block, name)
    if env.registry_credentials is None:  # credentials removed from the file: forget the old ones too
        _delete_block(RegistryCredentials, name)
    _old_credentials_saved(name, forget=True)
    return Environment(name=name, app=env.app, target=env.target, registry_credentials=env.registry_credentials)


def _save_if_changed(block, name: str) -> None:
    """Save `block` as `name` unless the server holds it already, equal field by field
    (secrets compared by value): a save costs seconds of API round trips, a load a
    tenth of that, and most runs import an env file that has not changed."""
    try:
        # Field values as they are (dict() of a model): a Block's model_dump builds its
        # JSON schema, which costs more than the load.
        if dict(type(block).load(name)) == dict(block):
            return
    except Exception:  # none yet, or one this version cannot read: saving replaces it
        pass
    block.save(name, overwrite=True)


def _delete_block(block_type: type, name: str) -> None:
    try:
        block_type.delete(name)
    except (ValueError, ObjectNotFound):
        pass


def _old_credentials_saved(name: str, forget: bool = False) -> bool:
    """Whether an earlier version's registry login is saved as `name`; `forget`
    deletes it (an import has just saved the file's login, or its lack of one)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        try:
            old = client.read_block_document_by_name(name, block_type_slug=OLD_SLUG, include_secrets=False)
        except ObjectNotFound:
            return False
        if forget:
            client.delete_block_document(old.id)
    return True


def _invalid(exc: ValidationError) -> str:
    """`KEY: rule` of the first invalid value; never the value, which may be a secret."""
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "?"
    key = (RELEASE_PREFIX + field.upper()) if field in ReleaseTarget.model_fields else field.upper()
    return f"{key}: {first['msg']}"


def load_environment(name: str) -> Environment:
    check_environment_name(name)
    try:
        app = AppEnvironment.load(name)
        target = ReleaseTarget.load(name)
    except RuntimeError as exc:  # Prefect's wrapper of a ValidationError: saved by an older version, or edited
        if not isinstance(exc.__cause__, ValidationError):
            raise
        raise ConfigError(f"blocks {name!r} hold an invalid value, {_invalid(exc.__cause__)}: fix it in the UI or "
                          f"run `smartrelease blocks import --env-file FILE --name {name}`") from None
    except ValueError:
        raise ConfigError(
            f"no blocks named {name!r}: run `smartrelease blocks import --env-file FILE --name {name}`"
        ) from None
    try:
        credentials = RegistryCredentials.load(name)
    except ValueError:
        credentials = None  # an unauthenticated registry
        if _old_credentials_saved(name):  # else it would push without the login
            raise ConfigError(f"blocks {name!r}: the registry login was saved by an earlier version of this tool "
                              f"(a {OLD_SLUG} block): run `smartrelease blocks import --env-file FILE --name "
                              f"{name}` to save it again") from None
    env = Environment(name=name, app=app, target=target, registry_credentials=credentials)
    remember(env.secret_values())
    return env

