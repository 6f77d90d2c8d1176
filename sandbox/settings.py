"""The sandbox's settings (SANDBOX_* environment variables, docs/sandbox.md), its stages
(production, and dev beside it), and how it speaks."""

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from smartrelease.blocks.envfile import name_from_env_file
from smartrelease.deployments import server
from smartrelease.local_postgres import Cluster, server_dir
from smartrelease.sandbox import identity, plane

TEMPLATE = Path(__file__).parent


APP_TEMPLATE = TEMPLATE / "app"


APP_SETTINGS = "smartrelease.env"  # an --app checkout's own RELEASE_ keys


# What the sandbox decides for every app: an --app's smartrelease.env may not set these.
SANDBOX_OWNED = {"RELEASE_PRODUCTION", "RELEASE_PUBLIC_URL", "RELEASE_CA_BUNDLE", "RELEASE_COMPOSE_PROJECT",
                 "RELEASE_COMPOSE_ENV_FILE", "RELEASE_APP_DIR", "RELEASE_REGISTRY", "RELEASE_PROMOTE_FROM",
                 "RELEASE_DATABASE_ADDRESS", "RELEASE_REGISTRY_USERNAME", "RELEASE_REGISTRY_PASSWORD"}


DB_USER = DB_NAME = "smartaccounting"


DB_SERVICE = "db"


DB_PROFILE = "bundled-db"  # the compose file's profile of its db service


BUNDLED, EXTERNAL = "bundled", "external"


@dataclass
class Settings:
    """Where a sandbox lives and what it is called. A port or project left None is
    this sandbox's own: recorded in its state directory (sandbox/identity.py), or
    claimed by `up`."""

    root: Path = field(default_factory=lambda: Path(os.environ.get("SANDBOX_DIR", ".sandbox")).resolve())
    env_file: Path = field(default_factory=lambda: Path(os.environ.get("SANDBOX_ENV_FILE", ".env.sandbox")).resolve())
    project: str | None = field(default_factory=lambda: os.environ.get("SANDBOX_PROJECT") or None)
    pg_port: int | None = field(default_factory=lambda: identity.explicit_port("pg"))  # --external-db only
    registry_port: int | None = field(default_factory=lambda: identity.explicit_port("registry"))
    # Repositories are <prefix>/backend and <prefix>/frontend: sandboxes sharing a
    # registry keep their tags apart.
    image_prefix: str = field(default_factory=lambda: os.environ.get("SANDBOX_IMAGE_PREFIX", "smartaccounting"))
    edge_port: int | None = field(default_factory=lambda: identity.explicit_port("edge"))
    dev_edge_port: int | None = field(default_factory=lambda: identity.explicit_port("dev_edge"))
    server_port: int | None = field(default_factory=lambda: identity.explicit_port("server"))
    server_pg_port: int | None = field(default_factory=lambda: identity.explicit_port("server_pg"))
    app: Path | None = None  # --app: the user's own checkout instead of the stand-in
    ident: identity.Identity | None = None  # read from root; `up` claims one

    def __post_init__(self) -> None:
        self.ident = self.ident or identity.Identity.load(self.root)
        if self.ident:
            self._adopt(self.ident)

    def _adopt(self, ident: identity.Identity) -> None:
        """Fill what was not set explicitly from the sandbox's recorded identity."""
        self.project = self.project or identity.project_name(ident.id)
        for name in identity.PORTS:
            if getattr(self, f"{name}_port") is None and name in ident.ports:
                setattr(self, f"{name}_port", ident.ports[name])

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    @property
    def public_url(self) -> str:
        return self.prod.public_url

    @property
    def app_dir(self) -> Path:
        return self.app or self.root / "app"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def compose_env_file(self) -> Path:
        return self.prod.compose_env_file

    @property
    def backup_dir(self) -> Path:
        return self.prod.backup_dir

    @property
    def cluster_wal_dir(self) -> Path:
        return server_dir(self.root / "wal-archive")

    def cluster(self) -> Cluster:
        """--external-db's PostgreSQL on this host: under root/ unless the server's user
        cannot reach it (see server_dir)."""
        return Cluster(server_dir(self.root / "postgres"), self.pg_port or 0, self.cluster_wal_dir)

    def plane(self) -> plane.Plane:
        """The sandbox's control plane: its own Prefect server on its own ports."""
        return plane.Plane(self.root, server.ServerSettings(
            state_dir=self.root / "prefect-server", port=self.server_port or identity.PORTS["server"][0],
            pg_port=self.server_pg_port or identity.PORTS["server_pg"][0]))

    @property
    def prod(self) -> "Stage":
        return Stage(self.env_file, self.project or "", DB_NAME, self.root / "compose.env", self.root / "backups",
                     self.root / "wal-archive", self.edge_port or 0)

    @property
    def dev(self) -> "Stage":
        return Stage(self.env_file.with_name(self.env_file.name + DEV), (self.project or "") + DEV, DB_NAME + "_dev",
                     self.root / f"compose{DEV}.env", self.root / f"backups{DEV}", self.root / f"wal-archive{DEV}",
                     self.dev_edge_port or 0)


DEV = "-dev"


@dataclass(frozen=True)
class Stage:
    """One environment of the sandbox: production, or dev beside it."""

    env_file: Path
    project: str
    db_name: str  # with --external-db: its database in the shared cluster
    compose_env_file: Path
    backup_dir: Path
    wal_dir: Path  # its db service's WAL archive (--external-db: the cluster's, shared)
    edge_port: int

    @property
    def name(self) -> str:
        return name_from_env_file(self.env_file)

    @property
    def public_url(self) -> str:
        return f"https://localhost:{self.edge_port}"


def log(msg: str) -> None:
    print(f"sandbox: {msg}", file=sys.stderr, flush=True)


def log_stage(stage: "Stage", msg: str) -> None:
    """A line about one environment of the sandbox (`sandbox` or `sandbox-dev`)."""
    log(f"environment {stage.name}: {msg}")


class SandboxError(Exception):
    pass
