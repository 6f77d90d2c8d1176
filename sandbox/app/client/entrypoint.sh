#!/bin/sh
set -e
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
  }
}
CONF
exec nginx -c /tmp/nginx.conf
