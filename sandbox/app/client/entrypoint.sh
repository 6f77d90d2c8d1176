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
  }
}
CONF
exec nginx -c /tmp/nginx.conf
