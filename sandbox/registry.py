"""The sandbox's registry: Debian's docker-registry, supervised, with basic or token
authentication when asked (the tests' registries too)."""

import time
from pathlib import Path

from smartrelease.adapters.http import answers
from smartrelease.daemon import Background
from smartrelease.sandbox.settings import SandboxError, Settings

class Registry:
    """Debian's docker-registry on `addr`, state in `directory`; with `htpasswd`
    (a bcrypt htpasswd file) it requires basic auth, with `token` (realm, service,
    issuer, PEM file of the issuer's certificate) the token flow, as Docker Hub,
    GHCR, GitLab and Harbor do."""

    def __init__(self, directory: Path, addr: str, htpasswd: Path | None = None,
                 token: tuple[str, str, str, Path] | None = None):
        self.dir = directory
        self.addr = addr
        self.htpasswd = htpasswd
        self.token = token
        self.process = Background(self.dir / "registry.pid", self.dir / "registry.log")

    def pid(self) -> int | None:
        return self.process.pid()

    def answering(self) -> bool:
        return answers(f"http://{self.addr}/v2/", ok=(200, 401))

    def start(self) -> None:
        """Start it, unless a registry already answers at `addr` (this one, or one
        started elsewhere, which is then used as it is and never stopped here)."""
        if self.answering():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "config.yml"
        auth = f"auth:\n  htpasswd:\n    realm: smartrelease\n    path: {self.htpasswd}\n" if self.htpasswd else ""
        if self.token:
            realm, service, issuer, bundle = self.token
            auth = (f"auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n"
                    f"    rootcertbundle: {bundle}\n")
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.dir / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.addr}\n{auth}"
        )
        proc = self.process.start(["docker-registry", "serve", str(config)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.answering():
                return
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        raise SandboxError(f"registry did not start on {self.addr}; see {self.dir / 'registry.log'}")

    def stop(self) -> None:
        self.process.stop()


def sandbox_registry(s: Settings) -> Registry:
    return Registry(s.root / "registry", s.registry)
