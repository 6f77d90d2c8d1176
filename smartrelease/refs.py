"""The names this tool takes from people and from registries, each checked by a
full match against its grammar (ASCII only) before it is used anywhere: an
environment name, a SemVer version, an image tag, a repository, a digest and a
registry address. Registry URLs are built from checked parts only.

The `check_*` functions return the value or raise ConfigError naming what is wrong.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

from smartrelease.errors import ConfigError

ENVIRONMENT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# semver.org's regular expression, with ASCII digits only.
SEMVER = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
# The OCI distribution spec's grammar for tags and repository names.
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# host[:port], the host a DNS name or an IPv4 address.
REGISTRY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(?::[0-9]{1,5})?")
DEV_TAG = re.compile(r"dev-[0-9a-f]{7,40}")


def _shown(value: str) -> str:
    # repr() shows a newline or a control character for what it is.
    return repr(value) if len(value) <= 80 else repr(value[:80]) + "..."


def _full(pattern: re.Pattern, value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def is_semver(text: str) -> bool:
    return _full(SEMVER, text)


def check_version(value: str, what: str = "version") -> str:
    """A SemVer that can be an image tag: build metadata (`+...`) cannot (a tag has no
    `+`), so it is refused rather than silently rewritten."""
    if not is_semver(value):
        raise ConfigError(f"{what} {_shown(value)} is not SemVer (MAJOR.MINOR.PATCH[-prerelease], ASCII digits)")
    if "+" in value:
        raise ConfigError(f"{what} {_shown(value)} has build metadata (+{value.split('+', 1)[1]}), which an image tag "
                          f"cannot carry: release {value.split('+', 1)[0]} or a pre-release such as "
                          f"{value.split('+', 1)[0]}-{value.split('+', 1)[1]}")
    return value


def _check(pattern: re.Pattern, value: str, problem: str) -> str:
    """`value` if it matches `pattern` whole, else ConfigError(problem), where {v}
    stands for the value as repr() shows it."""
    if not _full(pattern, value):
        raise ConfigError(problem.format(v=_shown(value) if isinstance(value, str) else repr(value)))
    return value


def check_tag(value: str, what: str = "tag") -> str:
    return _check(TAG, value, what + " {v} is not an image tag (letters, digits, '_', '.', '-'; at most 128; "
                                     "not starting with '.' or '-')")


def check_dev_tag(value: str, what: str = "--from") -> str:
    return _check(DEV_TAG, value, what + " {v}: expected a dev tag, dev-<short git SHA> (7 to 40 hex digits)")


def check_repository(value: str, what: str = "repository") -> str:
    return _check(REPOSITORY, value, what + " {v} is not a repository name (lower-case path components separated "
                                            "by '/', e.g. smartaccounting/backend)")


def check_digest(value: str, what: str = "digest") -> str:
    return _check(DIGEST, value, what + " must be sha256:<64 lower-case hex digits>, not {v}")


def check_registry(value: str, what: str = "RELEASE_REGISTRY") -> str:
    return _check(REGISTRY, value, what + " {v} is not host[:port]")


def check_env_file(path: str | os.PathLike) -> Path:
    """An env file that exists and can be read (checked before anything imports Prefect)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"env file not found: {path}")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"env file not readable: {path}")
    return path


def check_environment_name(value: str) -> str:
    return _check(ENVIRONMENT, value, "invalid environment name {v}: use lower-case letters, digits and dashes "
                                      "(at most 63, starting with a letter or digit)")


# --- image references --------------------------------------------------------

_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")


def docker_name(repository: str) -> str:
    """A repository as Docker Engine names it in RepoDigests: Docker Hub's without its
    host and without `library/` (`docker.io/library/postgres` -> `postgres`), any
    other registry's as written."""
    for alias in _HUB_ALIASES:
        if repository.startswith(alias + "/"):
            repository = repository[len(alias) + 1:]
            return repository.removeprefix("library/")
    return repository


def repository_of(reference: str) -> str:
    """The repository of a reference Docker lists: `repo:tag` or `repo@digest` (a
    registry's `host:port` stays: the tag is after the last colon)."""
    repository, at, _ = reference.partition("@")
    return repository if at else reference.rpartition(":")[0]


def same_repository(a: str, b: str) -> bool:
    return docker_name(a) == docker_name(b)


def api_path(registry: str, path: str) -> str:
    """The repository path the registry's API wants: Docker Hub keeps official images
    under `library/`."""
    return f"library/{path}" if registry in _HUB_ALIASES and "/" not in path else path


@dataclass(frozen=True)
class ImageRef:
    """registry/path@digest: an image pinned by digest, as the history and compose
    name it (e.g. 127.0.0.1:5001/smartaccounting/backend@sha256:...)."""

    registry: str
    path: str
    digest: str

    @classmethod
    def parse(cls, text: str) -> "ImageRef":
        repository, at, digest = text.partition("@")
        registry, slash, path = repository.partition("/")
        if not (at and slash):
            raise ConfigError(f"image {_shown(text)} is not registry/repository@digest")
        return cls(check_registry(registry), check_repository(path), check_digest(digest))

    @property
    def repository(self) -> str:
        return f"{self.registry}/{self.path}"

    def __str__(self) -> str:
        return f"{self.repository}@{self.digest}"
