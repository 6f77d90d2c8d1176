#!/usr/bin/env bash
# The runbook done by hand, as a faithful bash script: the baseline the flows are
# measured against (benchmarks/side_by_side.py). Sequential, as a person runs it.
#
#   bash benchmarks/runbook.sh preflight ENV_FILE
#   bash benchmarks/runbook.sh deploy ENV_FILE VERSION
#   bash benchmarks/runbook.sh rollback ENV_FILE VERSION
#
# preflight: the runbook's "Preflight checklist (env, DB, TLS, backups)": the eight
#   variables are set and NODE_ENV is production; `psql -c 'select 1'` (in the db
#   service's container, as on the production host); `touch` probes in BACKUP_DIR and
#   WAL_ARCHIVE_DIR; `curl` the public URL; the newest backup by `ls -t`, then
#   `pg_restore --list` when it is a pg_dump archive (an encrypted one, which bash
#   cannot open, gets `sha256sum -c` of its checksum file); the newest WAL segment.
# deploy: the runbook's deploy steps and post-deploy verification for a version
#   already in the registry: `docker compose up -d` of the backend and frontend,
#   `until curl -f …/ready; do sleep 1; done`, the four smoke curls and a `jq`
#   check of /api/system/version. No backup, no plan, no rollback, no digests.
# rollback: the runbook's "Rollback plan (code + DB)" after a failed deploy: the
#   breaking migration undone in the running backend (`docker compose exec backend
#   npm run db:rollback`), then a deploy of VERSION, the previous one. (The runbook
#   also says to restore the last backup first; a person in a hurry skips it, and so
#   does this baseline: the flows' safety backup is extra work they do.)
set -euo pipefail

load_env() {  # KEY=VALUE lines of the dotenv file, exported (no quoting, as the sandbox writes them)
  local key value
  while IFS='=' read -r key value; do
    export "$key=$value"
  done < <(grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$1")
  if [ -n "${RELEASE_COMPOSE_ENV_FILE:-}" ]; then
    while IFS='=' read -r key value; do
      [ -n "${!key:-}" ] || export "$key=$value"
    done < <(grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$RELEASE_COMPOSE_ENV_FILE")
  fi
}

fail() { echo "runbook: $*" >&2; exit 1; }

service_container() {
  docker ps -q --filter "label=com.docker.compose.project=$RELEASE_COMPOSE_PROJECT" \
    --filter "label=com.docker.compose.service=$1" | head -1
}

db_container() { service_container "${RELEASE_DATABASE_SERVICE:-db}"; }

curl_public() { curl -fsS --max-time 10 ${RELEASE_CA_BUNDLE:+--cacert "$RELEASE_CA_BUNDLE"} "$RELEASE_PUBLIC_URL$1"; }

preflight() {
  for v in NODE_ENV DATABASE_URL JWT_SECRET FRONTEND_URL CLIENT_URL CORS_ORIGIN BACKUP_PASSPHRASE ALLOW_PROD_MIGRATIONS; do
    [ -n "${!v:-}" ] || fail "$v is not set"
  done
  [ "$NODE_ENV" = production ] || fail "NODE_ENV is $NODE_ENV"
  # postgresql://user:password@host:port/db
  local rest="${DATABASE_URL#*://}" creds user db
  creds="${rest%%@*}"; user="${creds%%:*}"; db="${rest##*/}"
  PGPASSWORD="${creds#*:}" docker exec -e PGPASSWORD "$(db_container)" psql -h 127.0.0.1 -U "$user" -d "$db" -Atc 'select 1' >/dev/null \
    || fail "database: select 1 failed"
  for d in "$BACKUP_DIR" "$WAL_ARCHIVE_DIR"; do
    touch "$d/.runbook-probe" && rm "$d/.runbook-probe" || fail "$d is not writable"
  done
  curl_public /health >/dev/null || fail "public URL"
  local newest
  newest="$(ls -t "$BACKUP_DIR" | grep -v '\.sha256$' | head -1)"
  [ -n "$newest" ] && [ -s "$BACKUP_DIR/$newest" ] || fail "no backup"
  if [ "$(head -c 5 "$BACKUP_DIR/$newest")" = PGDMP ]; then
    pg_restore --list "$BACKUP_DIR/$newest" >/dev/null || fail "backup $newest unreadable"
  else
    (cd "$BACKUP_DIR" && sha256sum -c --quiet "$newest.sha256") || fail "backup $newest checksum"
  fi
  [ -n "$(ls -t "$WAL_ARCHIVE_DIR" | head -1)" ] || fail "no WAL segment archived"
  echo "preflight ok"
}

compose() {
  local rest="${DATABASE_URL#*://}"
  export POSTGRES_USER="${rest%%:*}" POSTGRES_DB="${rest##*/}"
  docker compose --file "$RELEASE_COMPOSE_FILE" --project-name "$RELEASE_COMPOSE_PROJECT" \
    ${RELEASE_COMPOSE_ENV_FILE:+--env-file "$RELEASE_COMPOSE_ENV_FILE"} "$@"
}

deploy() {
  local version="$1"
  export BACKEND_IMAGE="$RELEASE_REGISTRY/$RELEASE_BACKEND_IMAGE:$version"
  export FRONTEND_IMAGE="$RELEASE_REGISTRY/$RELEASE_FRONTEND_IMAGE:$version"
  compose up -d --quiet-pull --no-deps backend frontend
  local waited=0
  until curl_public /ready >/dev/null 2>&1; do
    sleep 1
    waited=$((waited + 1))
    [ "$waited" -lt 120 ] || fail "not ready after 120 s"
  done
  for p in /health /ready /api/system/version /api/auth/health; do
    curl_public "$p" >/dev/null || fail "smoke $p"
  done
  curl_public /api/system/version | jq -e --arg v "$version" '.version == $v' >/dev/null || fail "version is not $version"
  echo "deployed $version"
}

rollback() {
  local version="$1"
  # The failed version's images are what runs: compose needs them named to exec into it.
  export BACKEND_IMAGE FRONTEND_IMAGE
  BACKEND_IMAGE="$(docker inspect --format '{{.Config.Image}}' "$(service_container "${RELEASE_BACKEND_SERVICE:-backend}")")"
  FRONTEND_IMAGE="$(docker inspect --format '{{.Config.Image}}' "$(service_container "${RELEASE_FRONTEND_SERVICE:-frontend}")")"
  compose exec -T backend npm run db:rollback >/dev/null || fail "db:rollback failed"
  deploy "$version"
}

[ $# -ge 2 ] || fail "usage: runbook.sh preflight ENV_FILE | deploy ENV_FILE VERSION | rollback ENV_FILE VERSION"
load_env "$2"
case "$1" in
  preflight) preflight ;;
  deploy) [ $# -eq 3 ] || fail "deploy needs a VERSION"; deploy "$3" ;;
  rollback) [ $# -eq 3 ] || fail "rollback needs the VERSION to go back to"; rollback "$3" ;;
  *) fail "unknown command $1" ;;
esac
