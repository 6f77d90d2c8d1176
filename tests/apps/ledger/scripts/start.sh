#!/bin/sh
set -e
if [ "$NODE_ENV" != "production" ] || [ "$ALLOW_PROD_MIGRATIONS" = "true" ]; then
  npm run migrate
fi
exec node src/main.js
