"""Registry authentication as registries do it (the distribution spec's token flow).

A request goes out as it is (with a token already held for its repository); a `401`
names how to authenticate in `WWW-Authenticate`:
- `Basic realm=...`: the credentials, on the same request;
- `Bearer realm=...,service=...,scope=...` (Docker Hub, GHCR, GitLab, Harbor,
  distribution's own token auth): a token from the realm for that service and scope,
  asked for with the credentials (anonymously without them), then the same request
  with `Authorization: Bearer <token>`. Tokens are kept per repository, so the next
  request for it goes straight through; a push needs a wider scope, which the
  registry's next 401 asks for.
"""

import re
from urllib.parse import urlsplit

import httpx

from smartrelease.adapters.http import is_loopback

_PARAM = re.compile(r'(\w+)="([^"]*)"')
_REPOSITORY = re.compile(r"^/v2/(.+?)/(?:manifests|blobs|tags)/")


class RegistryAuthError(Exception):
    """The registry or its token service refused; never holds a credential or a token."""


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="x",service="y"` -> ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), dict(_PARAM.findall(params))


class RegistryAuth(httpx.Auth):
    requires_response_body = True  # the token service's answer is read in the flow

    def __init__(self, username: str | None = None, password: str | None = None):
        self._basic = httpx.BasicAuth(username, password) if username and password else None
        self._tokens: dict[str, str] = {}  # repository ("" for /v2/) -> bearer token

    @staticmethod
    def _key(request: httpx.Request) -> str:
        match = _REPOSITORY.match(request.url.path)
        return match[1] if match else ""

    def auth_flow(self, request: httpx.Request):
        key = self._key(request)
        if token := self._tokens.get(key):
            request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic" and self._basic is not None:
            yield from self._basic.auth_flow(request)
        elif scheme == "bearer" and params.get("realm"):
            token = yield from self._token(params)
            self._tokens[key] = token
            request.headers["Authorization"] = f"Bearer {token}"
            yield request
        # Otherwise the 401 stands: the caller reports it.

    def _token(self, challenge: dict[str, str]):
        realm = challenge["realm"]
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https"):
            raise RegistryAuthError(f"token realm {realm!r} is not an http(s) URL")
        if parts.scheme == "http" and self._basic is not None and not is_loopback(parts.hostname or ""):
            # The registry names the realm: one answering over http, or a forged
            # answer, would otherwise have the credentials sent across a network in clear.
            raise RegistryAuthError(f"the token service {parts.scheme}://{parts.netloc} is plain HTTP on another "
                                    "host: the registry credentials are not sent in clear (it must be https://)")
        params = {k: v for k, v in challenge.items() if k in ("service", "scope")}
        token_request = httpx.Request("GET", realm, params=params)
        if self._basic is not None:
            token_request = next(self._basic.auth_flow(token_request))
        response = yield token_request
        response.read()
        if response.status_code != 200:
            raise RegistryAuthError(f"the token service {realm} answered HTTP {response.status_code}"
                                    + (" (check RELEASE_REGISTRY_USERNAME and RELEASE_REGISTRY_PASSWORD)"
                                       if response.status_code in (401, 403) else ""))
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(f"the token service {realm} answered without a token")
        return token
