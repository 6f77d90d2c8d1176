"""Keeping secret values out of everything a person or a log can read."""

from collections.abc import Iterable

MASK = "***"


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
