#!/usr/bin/env bash
# Runs its arguments with access to Docker Engine. `make system` adds the user who
# ran it with sudo to the `docker` group, but a group joined in this login session
# is not active until the next one: `sg docker` activates it for one command.
set -euo pipefail
if [ "$(id -u)" = 0 ] || docker info >/dev/null 2>&1; then
  exec "$@"
fi
user=$(id -un)
if getent group docker | cut -d: -f4 | tr ',' '\n' | grep -qx "$user"; then
  exec sg docker -c "$(printf '%q ' "$@")"
fi
echo "with-docker-group: $user cannot reach Docker Engine and is not in the docker group: run \`make system\` (it adds you), or \`sudo usermod -aG docker $user\`" >&2
exit 2
