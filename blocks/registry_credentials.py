from pydantic import Field, SecretStr
from prefect.blocks.core import Block

from smartrelease.blocks.schema_cache import CachedSchema


class RegistryCredentials(CachedSchema, Block):
    """The login to the release registry: the env file's RELEASE_REGISTRY_USERNAME and
    RELEASE_REGISTRY_PASSWORD, saved under the environment's name.

    Our own block rather than prefect-docker's DockerRegistryCredentials, the only
    thing this tool used of that package: importing it cost 0.3 s of CPU in every
    process (it imports its worker and every Docker task).
    """

    _block_type_name = "SmartAccounting Registry Credentials"
    _block_type_slug = "smartaccounting-registry-credentials"

    username: str = Field(description="RELEASE_REGISTRY_USERNAME: the registry user.")
    password: SecretStr = Field(description="RELEASE_REGISTRY_PASSWORD: that user's password or token.")
    registry_url: str = Field(description="RELEASE_REGISTRY: the registry these credentials log in to.")


# The block type earlier versions of this tool saved the login as (prefect-docker's):
# load_environment names one left there, so nobody pushes without the login they gave.
OLD_SLUG = "docker-registry-credentials"
