#!/bin/sh
# Expects the certificate and key at /tls/edge.pem and /tls/edge.key.
set -e
cat > /tmp/nginx.conf <<CONF
daemon off;
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr;
events {}
http {
  access_log off;
  server {
    listen 127.0.0.1:${EDGE_PORT} ssl;
    ssl_certificate /tls/edge.pem;
    ssl_certificate_key /tls/edge.key;
    location /api/ { proxy_pass http://127.0.0.1:${BACKEND_PORT}; proxy_set_header Host \$host; }
    location = /health { proxy_pass http://127.0.0.1:${BACKEND_PORT}; }
    location = /ready { proxy_pass http://127.0.0.1:${BACKEND_PORT}; }
    location = /metrics { proxy_pass http://127.0.0.1:${BACKEND_PORT}; }
    location / { proxy_pass http://127.0.0.1:${FRONTEND_PORT}; }
  }
}
CONF
exec nginx -c /tmp/nginx.conf
