"""Keeping secret values out of everything a person or a log can read.

Secrets are masked where text is made: the typed errors (StepFailed, ConfigError,
CommandFailed) mask their message when they are created, so what Prefect turns into
state messages, events and logs is already safe. `MaskingFilter` on Prefect's and
this project's loggers masks again, as a second line of defence.

Masked: every secret value this process has loaded (`remember` is called whenever
an environment is read), in the forms it takes inside JSON, repr() and URLs, and the
userinfo of any URL (`scheme://user:***@host`), declared secret or not.
"""

import json
import os
import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote

MASK = "***"

# scheme://userinfo@ ; userinfo runs to the last @ before the host (a password may
# hold an unescaped @), never across whitespace, a path or a quote.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#'\"<>]*)@")

def _forms(secret: str) -> set[str]:
    """The secret as it appears in plain text, JSON, a repr() and a URL."""
    return {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1], quote(secret, safe="")} - {""}


class Masker:
    """A set of secret values and the function that masks them (and URL userinfo)."""

    def __init__(self, secrets: Iterable[str | None] = ()):
        self._lock = threading.Lock()
        self.secrets: tuple[str, ...] = ()  # longest first, so a secret containing another is masked whole
        self.remember(secrets)

    def remember(self, values: Iterable[str | None]) -> None:
        new = {form for v in values if v for form in _forms(v)}
        with self._lock:
            if not new <= set(self.secrets):
                self.secrets = tuple(sorted(set(self.secrets) | new, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        if not text:
            return text
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _URL_USERINFO.sub(_mask_userinfo, text)


# This process's secrets: every environment it has read, and the Prefect server's
# credentials when it was given them (a worker's flow runs inherit them).
# (Not a part shorter than 8 characters: it would mask ordinary words.)
_process = Masker(part for name in ("PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING")
                  for part in (os.environ.get(name, ""), os.environ.get(name, "").partition(":")[2])
                  if len(part) >= 8)


def remember(values: Iterable[str | None]) -> None:
    """Add secret values to those masked from now on, in this process."""
    _process.remember(values)


def mask(text: str) -> str:
    """`text` with every remembered secret and every URL's userinfo masked."""
    return _process(text)


def _mask_userinfo(match: re.Match) -> str:
    user, colon, _password = match["userinfo"].partition(":")
    if not match["userinfo"]:
        return match[0]
    # user:password keeps the user (it names who); a lone userinfo is often a token.
    return f"{match['scheme']}{user}:{MASK}@" if colon else f"{match['scheme']}{MASK}@"


class MaskingFilter(logging.Filter):
    """Masks a record's message and traceback before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format: leave it to logging
            return True
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = mask(record.exc_text)
        return True


_FILTER = MaskingFilter()
# Logger filters apply only to records made on that very logger; these are the ones
# Prefect's run loggers, worker and engine use, plus this project's own.
LOGGERS = ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.workers", "prefect.flow_runs.worker",
           "prefect.flow_runs.runner", "prefect.engine", "prefect.runner", "smartrelease", "")


def install_log_masking() -> None:
    """Put MaskingFilter on the loggers above and on every handler they have now
    (handler filters also catch records propagated from child loggers)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
