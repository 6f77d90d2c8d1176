#!/bin/sh
# Stands in for Traefik with its Docker provider. Terminates TLS on EDGE_LISTEN and
# routes BACKEND_ROUTES (default /api/, /health and /ready; a route ending in / is a
# prefix) to the backend, the rest to the frontend; /metrics is internal, as in
# production, and not routed.
#
# How a release stays invisible to users (docs/cutover.md):
# - Discovery (discover.py, through the Docker socket mounted read-only, as Traefik
#   has it): a container of BACKEND_HOST (FRONTEND_HOST) in this compose project
#   gets requests once Docker reports it healthy (or it has no health check), and
#   none once it is unhealthy, stopped or gone. A release starts the new containers
#   beside the old ones and drains an old one by failing its health check: nothing
#   rewrites this file.
# - Health: HAProxy also checks each container itself (BACKEND_CHECK, default
#   /ready; FRONTEND_CHECK, /) every 500 ms, and a connection error marks it down at
#   once (observe layer4): a crash is out of rotation before Docker notices.
# - Retries: a request whose connection is refused or closed unanswered is sent
#   again to another container.
#
# EDGE_MODE=dns stands in for Traefik's file provider instead (`http://backend:5000`):
# no Docker socket, no health check of its own; the service names are resolved
# through Docker's DNS (every second) and requests go to every address they give,
# over kept-alive connections. EDGE_RETRY=none sends each request once (an edge with
# no retry of any kind); EDGE_RETRY=go (the default) has Go's HTTP client's two
# safety nets, which Traefik keeps: a refused connection is tried on another address,
# and a request a reused connection closed unanswered is sent again.
# Expects the certificate and key at /tls/edge.pem and /tls/edge.key.
set -e
mode=${EDGE_MODE:-discovery}
[ "$mode" = dns ] || [ -S /var/run/docker.sock ] || { echo "edge: mount /var/run/docker.sock read-only: the edge finds the app's containers through it" >&2; exit 1; }
cat /tls/edge.pem /tls/edge.key > /tmp/edge.pem
acls=""
for route in ${BACKEND_ROUTES:-/api/ /health /ready}; do
  case "$route" in
    */) acls="$acls  acl to_backend path_beg $route
" ;;
    *) acls="$acls  acl to_backend path $route
" ;;
  esac
done
max=${EDGE_MAX_CONTAINERS:-8}
if [ "$mode" = dns ]; then
  case "${EDGE_RETRY:-go}" in
    go) retry="  retries 3
  option redispatch 1
  retry-on conn-failure empty-response"
        replay="  http-request disable-l7-retry if !METH_GET
" ;;
    none) retry="  retries 0" replay="" ;;
    *) echo "edge: EDGE_RETRY must be go or none" >&2; exit 1 ;;
  esac
  admin=""
  resolvers="resolvers docker
  nameserver dns 127.0.0.11:53
  accepted_payload_size 8192
  timeout resolve 1s
  timeout retry 1s
  hold valid 1s
  hold other 1s
  hold refused 1s
  hold nx 1s
  hold timeout 1s
  hold obsolete 0s"
  servers="  http-reuse always
$retry"
  to="resolvers docker init-addr none resolve-prefer ipv4"
  backend_servers="  server-template app 1-$max ${BACKEND_HOST:-backend}:${BACKEND_PORT:-8080} $to"
  frontend_servers="  server-template web 1-$max ${FRONTEND_HOST:-frontend}:${FRONTEND_PORT:-8081} $to"
else
  replay=""
  admin="  stats socket /tmp/haproxy.sock mode 600 level admin"
  resolvers=""
  servers="  timeout check 1s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response
  default-server check inter 500ms fall 2 rise 1 observe layer4 error-limit 1 on-error mark-down disabled"
  # Slots that discovery (edge-discover.py) fills through the runtime API.
  backend_servers="  option httpchk
  http-check send meth GET uri ${BACKEND_CHECK:-/ready}
  server-template app 1-$max 127.0.0.1:${BACKEND_PORT:-8080}"
  frontend_servers="  option httpchk
  http-check send meth GET uri ${FRONTEND_CHECK:-/}
  server-template web 1-$max 127.0.0.1:${FRONTEND_PORT:-8081}"
fi
cat > /tmp/haproxy.cfg <<CONF
global
  log stdout format raw daemon notice
$admin
  maxconn 4096
$resolvers
defaults
  mode http
  log global
  option dontlognull
  # Only the sessions that went wrong, with HAProxy's termination flags (which side
  # closed, at which stage): what a test that saw a failed request needs.
  option httplog
  option dontlog-normal
  option log-separate-errors
  timeout connect 1s
  timeout client 60s
  timeout server 60s
$servers
frontend https
  bind :${EDGE_LISTEN:-8443} ssl crt /tmp/edge.pem
$acls$replay  http-request return status 404 if { path /metrics }
  use_backend backend if to_backend
  default_backend frontend
backend backend
$backend_servers
backend frontend
$frontend_servers
CONF
if [ "$mode" != dns ]; then
  # Discovery runs beside HAProxy for the container's life, restarted if it ever ends.
  (while :; do python3 /usr/local/bin/edge-discover.py || true; sleep 1; done) &
fi
exec haproxy -db -f /tmp/haproxy.cfg
