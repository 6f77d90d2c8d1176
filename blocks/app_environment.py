from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr
from prefect.blocks.core import Block

from smartrelease.blocks.schema_cache import CachedSchema


class AppEnvironment(CachedSchema, Block):
    """SmartAccounting's runtime environment (the runbook's variable set).

    Every field mirrors an env key of the same name in upper case. Fields are
    optional here so that the preflight `environment` check can report every
    missing one at once instead of failing on the first.
    """

    _block_type_name = "SmartAccounting App Environment"
    _block_type_slug = "smartaccounting-app-environment"

    node_env: str | None = Field(None, description="NODE_ENV; must be `production` in a production environment.")
    database_url: SecretStr | None = Field(None, description="DATABASE_URL: postgres://user:password@host:port/db.")
    jwt_secret: SecretStr | None = Field(None, description="JWT_SECRET, at least 32 characters.")
    frontend_url: str | None = Field(None, description="FRONTEND_URL, an absolute http(s) URL.")
    client_url: str | None = Field(None, description="CLIENT_URL, an absolute http(s) URL.")
    cors_origin: str | None = Field(None, description="CORS_ORIGIN: comma-separated origins; not `*` in production.")
    backup_passphrase: SecretStr | None = Field(None, description="BACKUP_PASSPHRASE, encrypts backups at rest.")
    allow_prod_migrations: str | None = Field(None, description="ALLOW_PROD_MIGRATIONS: `true` or `false`.")
    backup_dir: str | None = Field(None, description="BACKUP_DIR: where logical backups are written.")
    wal_archive_dir: str | None = Field(None, description="WAL_ARCHIVE_DIR: where PostgreSQL ships WAL segments.")
    metrics_basic_auth_user: str | None = Field(None, description="METRICS_BASIC_AUTH_USER for /metrics.")
    metrics_basic_auth_pass: SecretStr | None = Field(None, description="METRICS_BASIC_AUTH_PASS for /metrics.")

    def named_secrets(self) -> dict[str, str]:
        """Each secret by what it is called (never by its value): the SecretStr fields
        by key, and the password inside DATABASE_URL."""
        named = {name.upper(): value.get_secret_value() for name in type(self).model_fields
                 if isinstance(value := getattr(self, name), SecretStr) and value.get_secret_value()}
        if password := self._database_password():
            named["the DATABASE_URL password"] = unquote(password)
        return named

    def secret_values(self) -> list[str]:
        """Every secret's plain value, for masking; the DATABASE_URL password also as written in the URL."""
        return [*self.named_secrets().values(), *filter(None, [self._database_password()])]

    def _database_password(self) -> str | None:
        if self.database_url is None:
            return None
        try:
            return urlsplit(self.database_url.get_secret_value()).password
        except ValueError:
            return None
