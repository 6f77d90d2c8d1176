"""Keeping secret values out of everything a person or a log can read."""

from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "***"


def mask_dsn(url: str) -> str:
    """A DATABASE_URL as host:port/database with the password masked.

    Never echoes the input when it does not parse: it may be a secret.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port or 5432
    except ValueError:
        return "<unparseable DATABASE_URL>"
    user = parts.username or ""
    cred = f"{user}:{MASK}@" if parts.password is not None else (f"{user}@" if user else "")
    return f"{parts.scheme}://{cred}{host}:{port}{parts.path}"


class Redactor:
    """Replaces every known secret value in a text with ***."""

    def __init__(self, secrets: Iterable[str]):
        # Longest first, so a secret containing another is masked whole. Very short
        # values would mask innocent text and are rejected by the environment check.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text
