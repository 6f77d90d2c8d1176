#!/bin/sh
# Mirrors SmartAccounting's scripts/docker-entrypoint.sh: in production, migrations
# run only when ALLOW_PROD_MIGRATIONS=true; otherwise they are skipped, never forced.
set -e
if [ "$NODE_ENV" = "production" ] && [ "$ALLOW_PROD_MIGRATIONS" != "true" ]; then
  echo "[entrypoint] NODE_ENV=production and ALLOW_PROD_MIGRATIONS is not 'true': migrations skipped"
else
  echo "[entrypoint] running migrations"
  npm run db:migrate
fi
exec node server.js
