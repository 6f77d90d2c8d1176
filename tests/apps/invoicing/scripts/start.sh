#!/bin/sh
# Migrations first, as the runbook has it: in production only when allowed.
set -e
if [ "$NODE_ENV" != "production" ] || [ "$ALLOW_PROD_MIGRATIONS" = "true" ]; then
  npm run db:migrate
fi
exec node server/index.js
