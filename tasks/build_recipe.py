"""How each app image is built, from the compose file itself: the `build:` section of
its service (`docker compose config --format json`: context, dockerfile, target,
args, labels), so another Dockerfile name or a build target is never silently
ignored. A service without one is built from RELEASE_BACKEND_CONTEXT /
RELEASE_FRONTEND_CONTEXT under RELEASE_APP_DIR, with its Dockerfile.

The build goes through Docker Engine's API (docker-py), which takes those five; a
`build:` that needs more (secrets, ssh, extra contexts...) is refused in preflight,
naming the key, before anything is built.
"""

from dataclasses import dataclass, field
from pathlib import Path

from smartrelease.blocks.app_contract import ROLES, Role
from smartrelease.blocks.envfile import Environment
from smartrelease.errors import CommandFailed, StepFailed
from smartrelease.tasks.launch import team_config

# The `build:` keys Docker Engine's build API takes as this tool passes them.
SUPPORTED = ("context", "dockerfile", "target", "args", "labels")


@dataclass(frozen=True)
class BuildRecipe:
    context: str
    dockerfile: str = "Dockerfile"
    target: str | None = None
    args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    origin: str = "the compose file's build: section"

    def describe(self) -> str:
        parts = [self.context, *([f"dockerfile {self.dockerfile}"] if self.dockerfile != "Dockerfile" else []),
                 *([f"target {self.target}"] if self.target else [])]
        return ", ".join(parts) + f" ({self.origin})"


def _inside(path: str, directory: str) -> bool:
    try:
        Path(path).resolve().relative_to(Path(directory).resolve())
    except ValueError:
        return False
    return True


def recipe(config: dict, env: Environment, role: Role, *, building: bool = True) -> BuildRecipe:
    """The recipe of `role`'s image; StepFailed (step build-pin) names what cannot be
    built as the compose file says. Not `building` (preflight, which may precede a
    release by digest that builds nothing), the context need not exist yet."""
    t = env.target
    name = t.service(role)
    build = ((config.get("services") or {}).get(name) or {}).get("build")
    app_dir = t.app_dir or "."
    if not build:
        context = Path(app_dir) / (t.backend_context if role == "backend" else t.frontend_context)
        return BuildRecipe(context=str(context), origin=f"RELEASE_{role.upper()}_CONTEXT, no build: in the compose file")
    if unsupported := sorted(set(build) - set(SUPPORTED)):
        raise StepFailed("build-pin", f"{name}'s build: uses {', '.join(unsupported)}, which this tool's build cannot "
                                      "pass (it takes " + ", ".join(SUPPORTED) + "): build and push the image yourself "
                                      "and release it with --digests")
    context = str(build.get("context") or "")
    if building and not Path(context).is_dir():
        raise StepFailed("build-pin", f"{name}'s build context {context} is not a directory of this host")
    if not _inside(context, app_dir):
        raise StepFailed("build-pin", f"{name}'s build context {context} is outside RELEASE_APP_DIR {app_dir}, whose "
                                      "checkout of the version is what a release builds and labels")
    return BuildRecipe(context=context, dockerfile=build.get("dockerfile") or "Dockerfile", target=build.get("target"),
                       args={k: str(v) for k, v in (build.get("args") or {}).items() if v is not None},
                       labels={k: str(v) for k, v in (build.get("labels") or {}).items()})


def build_config(env: Environment) -> dict:
    """The team's compose file without this tool's override (which takes `build:`
    away); nothing without one (a build for another host)."""
    try:
        return team_config(env)
    except CommandFailed as exc:
        raise StepFailed("build-pin", f"the compose file cannot be read: {exc}") from None


def recipes(env: Environment, config: dict | None = None) -> dict[Role, BuildRecipe]:
    config = build_config(env) if config is None else config
    return {role: recipe(config, env, role) for role in ROLES}


def recipe_problems(config: dict, env: Environment) -> list[str]:
    """For preflight: each image that cannot be built as the compose file says."""
    problems = []
    for role in ROLES:
        try:
            recipe(config, env, role, building=False)
        except StepFailed as exc:
            problems.append(exc.reason)
    return problems
