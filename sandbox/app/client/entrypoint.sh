#!/bin/sh
# API_UPSTREAM=backend:8080 proxies /api/ there, as many teams' frontends do: nginx
# resolves the name once, at start, and keeps the addresses it got (no resolver),
# with its defaults (a refused connection tried on the next address).
# API_CONNECT_TIMEOUT (say 1s): how long it waits on an address that does not answer
# before it tries the next one (nginx's default: 60s).
set -e
api=""
timeout=""
[ -z "$API_CONNECT_TIMEOUT" ] || timeout="proxy_connect_timeout $API_CONNECT_TIMEOUT;"
[ -z "$API_UPSTREAM" ] || api="location /api/ { proxy_pass http://$API_UPSTREAM; $timeout }"
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
