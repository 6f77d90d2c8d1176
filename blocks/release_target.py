import re
from typing import Literal

from pydantic import Field, field_validator
from prefect.blocks.core import Block

from smartrelease.blocks.app_contract import AppContract
from smartrelease.blocks.schema_cache import CachedSchema
from smartrelease.errors import ConfigError
from smartrelease.refs import check_registry, check_repository

DAY_S = 86400


class ReleaseTarget(CachedSchema, Block, AppContract):
    """Where and how a release goes: the env file's RELEASE_ keys, the app's contract
    (blocks/app_contract.py) among them.

    Field `x` is read from key `RELEASE_X`. Defaults here are the documented ones.
    """

    _block_type_name = "SmartAccounting Release Target"
    _block_type_slug = "smartaccounting-release-target"

    production: bool = Field(True, description="Whether this environment is production (NODE_ENV must then be `production`, CORS_ORIGIN not `*`).")
    public_url: str | None = Field(None, description="The public https URL of the app, e.g. https://accounting.example.com.")
    ca_bundle: str | None = Field(None, description="PEM file of a private CA to trust for public_url; the system trust store when unset.")
    compose_file: str | None = Field(None, description="The production compose file.")
    compose_project: str | None = Field(None, description="The Compose project name.")
    app_dir: str | None = Field(None, description="The app checkout holding its VERSION file and Dockerfiles.")
    registry: str | None = Field(None, description="The image registry, host[:port] (docker.io for Docker Hub).")
    registry_ca_bundle: str | None = Field(None, description="PEM file of a private CA to trust for the registry; the system trust store when unset.")
    backend_image: str | None = Field(None, description="Backend image repository, e.g. smartaccounting/backend.")
    frontend_image: str | None = Field(None, description="Frontend image repository, e.g. smartaccounting/frontend.")
    compose_env_file: str | None = Field(None, description="A dotenv file of extra, non-secret variables the compose file needs (ports, proxy image), passed to Compose with the app's variables.")
    backend_context: str = Field(".", description="The backend's build context, relative to app_dir, when its compose service has no build: section (which wins).")
    frontend_context: str = Field("client", description="The frontend's build context, relative to app_dir, when its compose service has no build: section (which wins).")
    promote_from: str = Field("dev", description="The environment whose passing release runs vouch for a digest promoted to this one.")
    ready_timeout_s: float = Field(120, gt=0, le=DAY_S, allow_inf_nan=False, description="How long wait-ready waits for the containers to be healthy and /ready to answer 200.")
    unhealthy_grace_s: float = Field(10, ge=0, le=3600, allow_inf_nan=False, description="How long wait-ready lets a new container stay unhealthy before failing it: one that is still starting (migrations in its entrypoint, a slow machine) may fail its health check a few times and then pass.")
    drain_s: float = Field(30, ge=0, le=3600, allow_inf_nan=False, description="How long an old container, told to stop (SIGTERM) once the new ones serve, has to finish its in-flight requests before it is killed.")
    drain_file: str = Field("/tmp/drain", pattern=r"^/[A-Za-z0-9._/-]+$", description="The file a release creates in an old container to drain it: the service's health check must fail once it exists (`test ! -e /tmp/drain && ...`), so the edge stops routing to it before it is stopped.")
    zero_downtime: Literal["preferred", "required"] = Field("preferred", description="`preferred`: an app service that cannot run twice at once (a host port it publishes, network_mode: host) is stopped before its new container starts, and the plan and report say users get errors on it meanwhile; `required`: preflight refuses such a service instead.")
    edge: Literal["discovery", "dns", "static"] | None = Field(None, description="How the edge in front of the app finds its containers, which decides how a release cuts over; unset, it is read from the compose file's edge service (tasks/edge_class.py), and taken to be `discovery` when that shows nothing. `discovery`: it routes only to containers Docker reports healthy (Traefik's Docker provider, the sandbox's edge): new ones serve once Docker calls them healthy, old ones are drained by failing their health check (RELEASE_DRAIN_FILE). `dns`: it resolves the service's name as it goes, routing to every address it gets (Traefik's file provider with http://backend:5000, nginx with a resolver): new ones serve once they answer their ready path on their own address, whatever their health-check interval, and old ones are stopped (SIGTERM, RELEASE_DRAIN_S) without waiting for a health check; the edge must retry a refused connection on another address. `static`: it resolved the names once, at its start (nginx without a resolver): no release can be invisible behind it, so the app's services are stopped first and the edge restarted after, and the plan names the downtime (see docs/zero-downtime.md).")
    edge_settle_s: float = Field(2, ge=0, le=600, allow_inf_nan=False, description="How long the old containers keep serving after the new ones are healthy, so the edge has found the new ones (by its discovery and health-check interval) before the old ones stop.")
    compose_timeout_s: float = Field(600, gt=0, le=DAY_S, allow_inf_nan=False, description="How long one `docker compose` command (up, stop, run, down) may take, image pulls included, before it is stopped and reported.")
    backup_timeout_s: float = Field(1800, gt=0, le=7 * DAY_S, allow_inf_nan=False, description="How long pg_dump, pg_restore or psql may take on one backup or restore (raise it for a large database).")
    backup_max_age_hours: float = Field(26, gt=0, le=24 * 366, allow_inf_nan=False, description="The newest logical backup must be younger than this.")
    tls_warn_days: int = Field(14, ge=0, le=3650, description="Warn when the certificate expires in fewer days than this.")
    tls_fail_days: int = Field(3, ge=0, le=3650, description="Fail when the certificate expires in fewer days than this.")
    wal_max_age_minutes: float = Field(60, gt=0, le=60 * 24 * 366, allow_inf_nan=False, description="WAL archiving is stale when segments wait and the last one shipped is older than this.")
    approval: Literal["required", "none"] | None = Field(None, description="`required`: a person approves each release after seeing its plan, before the backup and launch; `none`: releases go ahead unapproved. Unset: required when `production` is true.")
    approval_timeout_min: float = Field(60, gt=0, le=7 * 24 * 60, allow_inf_nan=False, description="How long a release waits for its approval before it ends, having changed nothing, as \"approval timed out\".")
    approval_separate: bool = Field(False, description="Whether the approver must be someone other than who triggered the release (self-approval refused and recorded).")
    notify_block: str | None = Field(None, description="The Prefect notification block that hears of failed releases and rollbacks, approvals waiting, failed control-plane verifies and promotions, as `<block type slug>/<name>`, e.g. `slack-webhook/release-alerts`.")
    env_file: str | None = Field(None, description="The env file this was imported from (set by the importer, not a key).")

    @property
    def approval_required(self) -> bool:
        return self.approval == "required" or (self.approval is None and self.production)

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: str | None) -> str | None:
        return None if value is None else _checked(check_registry, value, "host[:port]")

    @field_validator("notify_block")
    @classmethod
    def _notify_block(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9-]+/[A-Za-z0-9_-][A-Za-z0-9_.-]*", value):
            raise ValueError("must be <block type slug>/<block name>, e.g. slack-webhook/release-alerts")
        return value

    @field_validator("backend_image", "frontend_image")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        return None if value is None else _checked(check_repository, value, "a repository name")


def _checked(check, value: str, expected: str) -> str:
    try:
        return check(value)
    except ConfigError:
        raise ValueError(f"must be {expected}") from None
