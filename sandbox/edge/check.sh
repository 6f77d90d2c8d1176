#!/bin/sh
# HAProxy's external check of one container (HAPROXY_SERVER_ADDR:HAPROXY_SERVER_PORT):
# in rotation while its health endpoint answers 200 and Docker does not report it
# unhealthy, as Traefik's Docker provider routes only to healthy containers. A release
# drains a container by failing its Docker health check (the README's "Cutover").
. /tmp/edge-check.env  # BACKEND_CHECK, FRONTEND_CHECK
case "$HAPROXY_PROXY_NAME" in
  backend) path="$BACKEND_CHECK" ;;
  *) path="$FRONTEND_CHECK" ;;
esac
curl -fsS -o /dev/null --max-time 1 "http://$HAPROXY_SERVER_ADDR:$HAPROXY_SERVER_PORT$path" || exit 1
[ -S /var/run/docker.sock ] || exit 0
unhealthy=$(curl -fsS --max-time 1 --unix-socket /var/run/docker.sock \
  'http://docker/containers/json?filters=%7B%22health%22%3A%5B%22unhealthy%22%5D%7D') || exit 0
case "$unhealthy" in
  *"\"IPAddress\":\"$HAPROXY_SERVER_ADDR\""*) exit 1 ;;
esac
exit 0
