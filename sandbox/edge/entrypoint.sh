#!/bin/sh
# Stands in for Traefik: terminates TLS on EDGE_LISTEN (in the container) and routes
# BACKEND_ROUTES (default /api/, /health and /ready; a route ending in / is a prefix)
# to the backend, the rest to the frontend. /metrics is internal, as in production:
# the edge does not route it. Service names are looked up per request (Docker's
# DNS), since a release gives the backend a new container.
# Expects the certificate and key at /tls/edge.pem and /tls/edge.key.
set -e
routes=""
for route in ${BACKEND_ROUTES:-/api/ /health /ready}; do
  case "$route" in
    */) routes="$routes    location $route { proxy_pass \$backend; proxy_set_header Host \$host; }
" ;;
    *) routes="$routes    location = $route { proxy_pass \$backend; }
" ;;
  esac
done
cat > /tmp/nginx.conf <<CONF
daemon off;
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr;
events {}
http {
  access_log off;
  resolver ${RESOLVER:-127.0.0.11} valid=1s ipv6=off;
  server {
    listen ${EDGE_LISTEN:-8443} ssl;
    ssl_certificate /tls/edge.pem;
    ssl_certificate_key /tls/edge.key;
    set \$backend http://${BACKEND_HOST:-backend}:${BACKEND_PORT:-8080};
    set \$frontend http://${FRONTEND_HOST:-frontend}:${FRONTEND_PORT:-8081};
$routes    location = /metrics { return 404; }
    location / { proxy_pass \$frontend; }
  }
}
CONF
exec nginx -c /tmp/nginx.conf
