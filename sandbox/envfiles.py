"""What `sandbox up` writes: the environment's env file (secrets, 0600) and the
deployment's own compose variables; an --app checkout's RELEASE_ keys merged in."""

from dotenv import dotenv_values

from smartrelease.sandbox.settings import (APP_SETTINGS, BUNDLED, DB_NAME, DB_PROFILE, DB_SERVICE, DB_USER, EXTERNAL,
                                           SANDBOX_OWNED, SandboxError, Settings, Stage)

def app_settings(s: Settings) -> dict[str, str]:
    """An --app checkout's RELEASE_ keys (its smartrelease.env), its compose file's
    path made absolute; {} for the stand-in."""
    if not s.app:
        return {}
    path = s.app / APP_SETTINGS
    values = {k: v for k, v in (dotenv_values(path) if path.is_file() else {}).items() if v is not None}
    if owned := sorted(k for k in values if k in SANDBOX_OWNED or not k.startswith("RELEASE_")):
        raise SandboxError(f"{path}: {', '.join(owned)} cannot be set there: the sandbox sets them (docs/sandbox.md lists "
                           "what an app's smartrelease.env may hold)")
    values["RELEASE_COMPOSE_FILE"] = str(s.app / values.get("RELEASE_COMPOSE_FILE", "docker-compose.prod.yml"))
    return values


def env_file_text(s: Settings, stage: Stage, sec: dict[str, str], kind: str) -> str:
    app = app_settings(s)
    if kind == BUNDLED:
        # The app's view: db on the project's network. This host reaches it at the db
        # container's address (RELEASE_DATABASE_SERVICE), read from Docker Engine.
        service = app.get("RELEASE_DATABASE_SERVICE", DB_SERVICE)
        database = {"DATABASE_URL": f"postgresql://{DB_USER}:{sec['SANDBOX_DB_PASSWORD']}@{service}:5432/{DB_NAME}",
                    "WAL_ARCHIVE_DIR": str(stage.wal_dir), "RELEASE_DATABASE_SERVICE": service}
    else:
        # A database outside Compose: the containers reach this host's cluster through
        # host.docker.internal, this host at 127.0.0.1.
        database = {"DATABASE_URL": f"postgresql://{DB_USER}:{sec['SANDBOX_DB_PASSWORD']}@host.docker.internal:"
                                    f"{s.pg_port}/{stage.db_name}",
                    "WAL_ARCHIVE_DIR": str(s.cluster_wal_dir), "RELEASE_DATABASE_ADDRESS": f"127.0.0.1:{s.pg_port}"}
    values = {
        "NODE_ENV": "production",
        "DATABASE_URL": database.pop("DATABASE_URL"),
        "JWT_SECRET": sec["JWT_SECRET"],
        "FRONTEND_URL": stage.public_url,
        "CLIENT_URL": stage.public_url,
        "CORS_ORIGIN": stage.public_url,
        "BACKUP_PASSPHRASE": sec["BACKUP_PASSPHRASE"],
        "ALLOW_PROD_MIGRATIONS": "true",
        "BACKUP_DIR": str(stage.backup_dir),
        "WAL_ARCHIVE_DIR": database.pop("WAL_ARCHIVE_DIR"),
        "METRICS_BASIC_AUTH_USER": "metrics",
        "METRICS_BASIC_AUTH_PASS": sec["METRICS_BASIC_AUTH_PASS"],
        "RELEASE_PRODUCTION": "true",
        # Production-like, but its releases are not held for a person (the demo asks for one).
        "RELEASE_APPROVAL": "none",
        "RELEASE_PUBLIC_URL": stage.public_url,
        "RELEASE_CA_BUNDLE": str(s.tls_dir / "ca.pem"),
        "RELEASE_COMPOSE_FILE": str(s.app_dir / "docker-compose.prod.yml"),
        "RELEASE_COMPOSE_PROJECT": stage.project,
        "RELEASE_COMPOSE_ENV_FILE": str(stage.compose_env_file),
        "RELEASE_APP_DIR": str(s.app_dir),
        "RELEASE_REGISTRY": s.registry,
        # The sandbox's edge finds and checks containers every 500 ms (sandbox/edge/).
        "RELEASE_EDGE_SETTLE_S": "1",
        # The stand-in's images expose no port (EXPOSE): the team tells the release where
        # its containers listen, to ask each one its ready path on its own address.
        "RELEASE_BACKEND_PORT": "8080",
        "RELEASE_FRONTEND_PORT": "8081",
        "RELEASE_BACKEND_IMAGE": f"{s.image_prefix}/backend",
        "RELEASE_FRONTEND_IMAGE": f"{s.image_prefix}/frontend",
        **database,
        # Promotion into production asks the dev environment's history for evidence.
        "RELEASE_PROMOTE_FROM": s.dev.name,
        # The stand-in's metrics are internal, as the runbook has it: the edge does not route them.
        **(app or {"RELEASE_METRICS_URL": "http://backend:8080/metrics"}),
        # Kept so a second `sandbox up` reuses the database password, topology and app.
        "SANDBOX_DB_PASSWORD": sec["SANDBOX_DB_PASSWORD"],
        "SANDBOX_DATABASE": kind,
        **({"SANDBOX_APP": str(s.app)} if s.app else {}),
    }
    if kind == EXTERNAL:
        values.pop("RELEASE_DATABASE_SERVICE", None)
    return "# Written by `smartrelease sandbox up`. Holds secrets: keep it 0600.\n" + "".join(f"{k}={v}\n" for k, v in values.items())


def compose_env_text(s: Settings, stage: Stage, kind: str, images: dict[str, str]) -> str:
    """The sandbox deployment's own, non-secret compose variables (RELEASE_COMPOSE_ENV_FILE)."""
    values = {"EDGE_IMAGE": images["edge"], "DB_IMAGE": images["db"], "EDGE_TLS_DIR": str(s.tls_dir),
              "EDGE_PORT": stage.edge_port}
    if kind == BUNDLED:
        values["COMPOSE_PROFILES"] = DB_PROFILE
    return "# Written by `smartrelease sandbox up`.\n" + "".join(f"{k}={v}\n" for k, v in values.items())
