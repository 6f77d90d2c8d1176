"""Files this tool writes for the programs it runs (Compose's override file): in a
state directory of its own, private, whole or not at all, never through a link
someone planted in its place."""

import os
import stat
from pathlib import Path

from smartrelease.errors import ConfigError


def state_dir() -> Path:
    """SMARTRELEASE_STATE, else ~/.local/state/smartrelease."""
    return Path(os.environ.get("SMARTRELEASE_STATE") or Path.home() / ".local" / "state" / "smartrelease")


def _private_dir(path: Path) -> None:
    """`path` and its parents made 0700 where missing; `path` itself must be a real
    directory of this user, not a link."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise ConfigError(f"{path} is not a directory of this user (a link, or someone else's): remove it")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)


def write_private(path: Path, text: str) -> None:
    """`path` holds `text` (0600) afterwards. Unchanged when it already does; else a
    new file is written beside it and renamed over it, which replaces a planted link
    instead of writing through it."""
    _private_dir(path.parent)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        pass  # missing, or a link: written below
    else:
        with os.fdopen(fd) as f:
            if f.read() == text:
                return
    partial = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def read_private(path: Path) -> str | None:
    """What a private file (credentials) holds, stripped; None when it does not exist.
    A link in its place, or a file others may read or write, is a ConfigError: its
    content may not be what this tool wrote, or no longer a secret."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc} (a link in its place? remove it)") from None
    with os.fdopen(fd) as f:
        if stat.S_IMODE(os.fstat(f.fileno()).st_mode) & 0o077:
            raise ConfigError(f"{path} may be read or written by other users: chmod 600 it, or remove it to "
                              "have new credentials made")
        return f.read().strip()


def create_new(path: Path, mode: int = 0o600) -> int:
    """A new file at `path`, opened for writing (a file descriptor): whatever was there
    (a partial file a killed run left, or a link someone planted to make this tool
    truncate what it points to) is removed first, never written through. Someone
    who plants again in between makes it fail (O_EXCL), not write elsewhere."""
    try:
        os.unlink(path)  # a link itself, not its target
    except FileNotFoundError:
        pass
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
