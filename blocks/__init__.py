"""Configuration and secrets, stored as Prefect blocks.

`AppEnvironment` holds the app's own variables (the runbook's set), every secret a
SecretStr. `ReleaseTarget` holds what the release tooling needs (the RELEASE_ keys).
Both are saved under the environment's name (`prod`, `dev`, `sandbox`) and loaded by
the flows at run time with `load_environment(name)`.
"""

from smartrelease.blocks.app_environment import AppEnvironment
from smartrelease.blocks.release_target import ReleaseTarget
from smartrelease.blocks.envfile import Environment, import_env_file, load_environment, parse_env_file

__all__ = [
    "AppEnvironment",
    "ReleaseTarget",
    "Environment",
    "import_env_file",
    "load_environment",
    "parse_env_file",
]
