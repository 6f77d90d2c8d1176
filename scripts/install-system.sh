#!/usr/bin/env bash
# Installs and starts what the sandbox and the tests need on a Debian bookworm
# machine: Docker Engine, Compose v2, a registry, PostgreSQL 15, mmdebstrap, Chromium and npm
# (the stand-in backend's packages are installed on the host, then copied into its image).
# Idempotent: a second run installs nothing and starts only what is not running.
set -euo pipefail

need_root() { [ "$(id -u)" = 0 ] || { echo "install-system: run as root (apt-get, dockerd)" >&2; exit 2; }; }

# chromium: headless, for the tests that drive the Prefect UI (Playwright with executable_path);
# gcc and libc6-dev build the tests' shim that keeps it blind to Docker's interfaces (tests/chromium_no_netlink.c).
apt_packages=(docker.io docker-registry mmdebstrap postgresql-15 postgresql-client-15 uidmap python3-venv chromium gcc libc6-dev)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# Any npm will do (a machine may have Node.js from elsewhere).
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  need_root
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Compose v2: bookworm only ships v1, trixie's docker-compose (2.x) is a static
# plugin binary. Reuse the machine's own mirror so no host name is written here.
if ! docker compose version >/dev/null 2>&1; then
  need_root
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || { echo "install-system: no Debian mirror found in the apt sources" >&2; exit 1; }
  cat > /etc/apt/sources.list.d/trixie-compose.sources <<SRC
Types: deb
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  # Only docker-compose may come from trixie; everything else stays on bookworm.
  cat > /etc/apt/preferences.d/trixie-compose <<PREF
Package: *
Pin: release n=trixie
Pin-Priority: 50

Package: docker-compose
Pin: release n=trixie
Pin-Priority: 990
PREF
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
  # The package puts the plugin where the Debian docker client looks; make the
  # client on PATH (which may be another build) find it too.
  for d in /usr/local/lib/docker/cli-plugins /root/.docker/cli-plugins; do
    mkdir -p "$d"
    [ -e "$d/docker-compose" ] || ln -sf /usr/libexec/docker/cli-plugins/docker-compose "$d/docker-compose"
  done
  docker compose version >/dev/null
fi

# The Debian registry package starts a service we do not use: the sandbox runs
# its own registry on its own port and storage.
if ! docker info >/dev/null 2>&1; then
  need_root
  mkdir -p /var/log
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "install-system: dockerd did not start, see /var/log/dockerd.log" >&2; exit 1; }
fi
# Run with sudo by a user: let that user reach Docker Engine (scripts/with-docker-group.sh
# makes the group work in the current session too).
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && ! id -nG "$SUDO_USER" | grep -qw docker; then
  usermod -aG docker "$SUDO_USER"
  echo "install-system: added $SUDO_USER to the docker group"
fi

echo "install-system: docker $(docker version -f '{{.Server.Version}}'), $(docker compose version --short 2>/dev/null | sed 's/^/compose /'), PostgreSQL $(/usr/lib/postgresql/15/bin/postgres --version | awk '{print $3}')"
