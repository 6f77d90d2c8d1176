#!/bin/sh
# API_UPSTREAM=backend:8080 proxies /api/ there, as many teams' frontends do: nginx
# resolves the name once, at start, and keeps the addresses it got (no resolver),
# with its defaults (a refused connection tried on the next address).
set -e
api=""
[ -z "$API_UPSTREAM" ] || api="location /api/ { proxy_pass http://$API_UPSTREAM; }"
cat > /tmp/nginx.conf <<CONF
daemon off;
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr;
events {}
http {
  include /etc/nginx/mime.types;
  access_log off;
  server {
    listen ${PORT};
    root /srv;
    # A single-page app's: any path it does not have gets the page (200), as the
    # runbook's client does; /health on the public URL then answers with it.
    location / { try_files \$uri /index.html; }
    $api
  }
}
CONF
exec nginx -c /tmp/nginx.conf
