"""The sandbox's base image, built from Debian's packages (no public registry is
reachable here): mmdebstrap into a tarball, `docker import`, cached on disk.

Debian trixie, whatever the host runs: its PostgreSQL 17 is newer than the host's
client (bookworm's 15), as production's database may be, and its Node.js 20 runs
sequelize-cli. One image serves the database, the Node.js backend, the frontend and
the TLS edge. A machine that can pull may set SANDBOX_BASE_IMAGE=debian:trixie-slim
instead; the Dockerfiles install what that image lacks.
"""

import fcntl
import hashlib
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import docker

from smartrelease.process import Command, run
from smartrelease.adapters.images import build_image

DEFAULT_BASE_IMAGE = "smartrelease-sandbox/base:trixie"
SUITE = "trixie"
# Everything the database, the stand-in backend (npm runs its migrations, as the
# runbook's entrypoint does), its frontend (nginx) and the TLS edge (HAProxy) need.
PACKAGES = ["postgresql-17", "nodejs", "npm", "nginx", "haproxy", "ca-certificates", "curl"]
# Documentation and translations are left out: every sandbox pushes this layer once.
EXCLUDED = ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*"]
# What the image is made of; a change to it makes (and imports) a new one.
RECIPE = hashlib.sha256(repr((SUITE, PACKAGES, EXCLUDED)).encode()).hexdigest()[:12]
RECIPE_LABEL = "smartrelease.base-recipe"
CACHE_DIR = Path(os.environ.get("SMARTRELEASE_CACHE", Path.home() / ".cache" / "smartrelease"))
# The stand-in's npm packages on the base image (ensure_deps_image).
DEPS_REPOSITORY = "smartrelease-sandbox/app-deps"
DEPS_BASE_LABEL = "smartrelease.deps-base"
DEPS_DOCKERFILE = f"""FROM {DEFAULT_BASE_IMAGE}
RUN command -v npm >/dev/null && command -v curl >/dev/null || \\
    (apt-get update && apt-get install -y --no-install-recommends nodejs npm curl && rm -rf /var/lib/apt/lists/*)
WORKDIR /app
COPY node_modules/ ./node_modules/
"""
NPM_TIMEOUT_S = 900
MMDEBSTRAP_TIMEOUT_S = 1800
IMPORT_TIMEOUT_S = 600


class BaseImageError(Exception):
    pass


def base_image_name() -> str:
    return os.environ.get("SANDBOX_BASE_IMAGE", DEFAULT_BASE_IMAGE)


def _codename() -> str | None:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"') or None
    return None


def _apt_sources(directory: Path) -> str:
    """The machine's own apt sources with its release named SUITE instead, so the
    image comes from the mirror the machine already uses."""
    for candidate in ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"):
        path = Path(candidate)
        if path.is_file() and path.stat().st_size > 0:
            text, codename = path.read_text(), _codename()
            if codename and codename != SUITE:
                text = re.sub(rf"\b{re.escape(codename)}(?=[\s-]|$)", SUITE, text)
            out = directory / f"sources-{SUITE}{path.suffix or '.list'}"
            out.write_text(text)
            return str(out)
    raise BaseImageError("no apt sources found for mmdebstrap (/etc/apt/sources.list.d/debian.sources)")


@contextmanager
def _one_at_a_time():
    """Sandboxes coming up at once (parallel test workers, two clones) take turns:
    one builds an image, the others find it built."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(CACHE_DIR / ".base-image.lock", os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure_base_image(client: docker.DockerClient, log=print) -> str:
    """The base image, always under DEFAULT_BASE_IMAGE: the app's Dockerfiles
    default to that name, so release builds need no sandbox-specific build args."""
    with _one_at_a_time():
        return _ensure_base_image(client, log)


def deps_image_name(lockfile: Path) -> str:
    """The stand-in's dependencies image for this package-lock.json: its name is what
    the stand-in's Dockerfile starts FROM (tests/test_contract.py keeps the two equal)."""
    return f"{DEPS_REPOSITORY}:{hashlib.sha256(lockfile.read_bytes()).hexdigest()[:12]}"


def ensure_deps_image(client: docker.DockerClient, app_template: Path, log=print) -> str:
    """The base image with the stand-in's npm packages in /app/node_modules, built once
    per package-lock.json (and base image): a release build of the stand-in then
    sends and checksums only its own few files, not 33 MB of node_modules each time.
    The packages are installed here, on the host (`npm ci`, npm's cache under
    SMARTRELEASE_CACHE): containers reach no package registry."""
    name = deps_image_name(app_template / "package-lock.json")
    with _one_at_a_time():
        base = client.images.get(_ensure_base_image(client, log))
        try:
            if (client.images.get(name).labels or {}).get(DEPS_BASE_LABEL) == base.id:
                return name
        except docker.errors.ImageNotFound:
            pass
        # A directory of its own (mkdtemp: new, 0700), so no write here follows a planted link.
        context = Path(tempfile.mkdtemp(prefix="app-deps-", dir=CACHE_DIR))
        try:
            for file in ("package.json", "package-lock.json"):
                shutil.copyfile(app_template / file, context / file)
            log(f"building {name}: the stand-in's npm packages, once per package-lock.json")
            npm_ci(context, log)
            (context / "Dockerfile").write_text(DEPS_DOCKERFILE)
            build_image(client, context, name, labels={DEPS_BASE_LABEL: base.id})
        finally:
            shutil.rmtree(context, ignore_errors=True)
        return name


def npm_ci(app_dir: Path, log=print) -> None:
    """`npm ci` from package-lock.json, unless node_modules already matches it; npm's
    cache under SMARTRELEASE_CACHE, so a second install downloads nothing."""
    lock, installed = app_dir / "package-lock.json", app_dir / "node_modules" / ".package-lock.json"
    if not lock.is_file() or (installed.is_file() and installed.stat().st_mtime >= lock.stat().st_mtime):
        return
    log(f"npm ci in {app_dir}")
    run(Command(("npm", "ci", "--no-audit", "--no-fund", "--prefer-offline", "--cache", str(CACHE_DIR / "npm")),
                timeout_s=NPM_TIMEOUT_S, env={**os.environ, "npm_config_update_notifier": "false"}, name="npm ci",
                cwd=str(app_dir)))


def _ensure_base_image(client: docker.DockerClient, log) -> str:
    name = base_image_name()
    try:
        image = client.images.get(name)
        if name != DEFAULT_BASE_IMAGE:
            image.tag(DEFAULT_BASE_IMAGE)
            return DEFAULT_BASE_IMAGE
        if (image.labels or {}).get(RECIPE_LABEL) == RECIPE:
            return DEFAULT_BASE_IMAGE
        log(f"{name} was built from another recipe: building it again")
    except docker.errors.ImageNotFound:
        pass
    if name != DEFAULT_BASE_IMAGE:
        log(f"pulling base image {name}")
        client.images.pull(name).tag(DEFAULT_BASE_IMAGE)
        return DEFAULT_BASE_IMAGE
    tarball = CACHE_DIR / f"base-{SUITE}-{RECIPE}.tar"
    if not tarball.is_file():
        if not shutil.which("mmdebstrap"):
            raise BaseImageError("mmdebstrap is not installed: run scripts/install-system.sh")
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial.tar")
        log(f"building base image with mmdebstrap ({', '.join(PACKAGES)}); takes a minute or two")
        try:
            # mmdebstrap needs root (or user namespaces, often closed): a user goes through sudo.
            as_root = () if os.geteuid() == 0 else ("sudo", "-n")
            run(Command((*as_root, "mmdebstrap", "--quiet", "--variant=apt", "--include=" + ",".join(PACKAGES),
                         *(f"--dpkgopt=path-exclude={pattern}" for pattern in EXCLUDED), SUITE,
                         str(partial), _apt_sources(CACHE_DIR)), timeout_s=MMDEBSTRAP_TIMEOUT_S))
        except Exception:
            partial.unlink(missing_ok=True)
            raise
        partial.rename(tarball)
    log(f"importing {tarball} as {name}")
    repository, tag = name.rsplit(":", 1)
    run(Command(("docker", "import", "--change", f"LABEL {RECIPE_LABEL}={RECIPE}", str(tarball), f"{repository}:{tag}"),
                timeout_s=IMPORT_TIMEOUT_S))
    return name
