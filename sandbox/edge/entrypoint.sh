#!/bin/sh
# Stands in for Traefik with its Docker provider. Terminates TLS on EDGE_LISTEN and
# routes BACKEND_ROUTES (default /api/, /health and /ready; a route ending in / is a
# prefix) to the backend, the rest to the frontend; /metrics is internal, as in
# production, and not routed.
#
# How a release stays invisible to users (the README's "Cutover"):
# - Discovery: every container of a service answers to its name in Docker's DNS.
#   HAProxy re-resolves it every second (server-template), so a container a release
#   starts beside the old one is found, and one that is gone is dropped, without any
#   change to this file.
# - Health: a container gets requests only once BACKEND_CHECK (FRONTEND_CHECK)
#   answers 200 and Docker does not report it unhealthy (edge-check.sh, with the
#   Docker socket mounted read-only, as Traefik has it), checked every 500 ms; none
#   once two checks fail. A release drains an old container by failing its health
#   check before it stops it.
# - Retries: a request whose connection is refused or closed unanswered (a container
#   that has just been told to stop) is sent again to another container, and a
#   connection error marks that container down at once (observe layer4).
# - Checks get a second (timeout connect, which bounds an external check too): on a
#   machine busy building an image, a check that took 200 ms took every container
#   out of rotation at once.
# Expects the certificate and key at /tls/edge.pem and /tls/edge.key.
set -e
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
# HAProxy runs its external checks with an empty environment: the paths go in a file.
printf 'BACKEND_CHECK=%s\nFRONTEND_CHECK=%s\n' "${BACKEND_CHECK:-/ready}" "${FRONTEND_CHECK:-/}" > /tmp/edge-check.env
cat > /tmp/haproxy.cfg <<CONF
global
  log stdout format raw daemon notice
  external-check
  insecure-fork-wanted
  maxconn 4096
defaults
  mode http
  log global
  option dontlognull
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  timeout check 2s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response
  default-server check inter 500ms fall 2 rise 1 observe layer4 error-limit 1 on-error mark-down init-addr none resolvers docker resolve-prefer ipv4
resolvers docker
  nameserver dns ${RESOLVER:-127.0.0.11}:53
  hold valid 1s
  hold obsolete 1s
  hold nx 1s
  hold other 1s
  timeout resolve 1s
  timeout retry 1s
frontend https
  bind :${EDGE_LISTEN:-8443} ssl crt /tmp/edge.pem
$acls  http-request return status 404 if { path /metrics }
  use_backend backend if to_backend
  default_backend frontend
backend backend
  option external-check
  external-check path /usr/bin:/bin
  external-check command /usr/local/bin/edge-check.sh
  server-template app 1-${EDGE_MAX_CONTAINERS:-8} ${BACKEND_HOST:-backend}:${BACKEND_PORT:-8080}
backend frontend
  option external-check
  external-check path /usr/bin:/bin
  external-check command /usr/local/bin/edge-check.sh
  server-template web 1-${EDGE_MAX_CONTAINERS:-8} ${FRONTEND_HOST:-frontend}:${FRONTEND_PORT:-8081}
CONF
exec haproxy -db -f /tmp/haproxy.cfg
