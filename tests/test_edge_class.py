"""The edge class read from a team's compose file, as the real `docker compose config`
gives it (no container is started)."""

import json

import pytest

from smartrelease.process import run
from smartrelease.adapters.compose import ComposeProject
from smartrelease.tasks.edge_class import EDGE_MEANS, detect

APP = {"backend", "frontend", "db"}
NGINX_STATIC = "events {}\nhttp { server { listen 443 ssl; location / { proxy_pass http://frontend:80; } } }\n"
NGINX_RESOLVER = ("events {}\nhttp { server {\n  resolver 127.0.0.11 valid=1s;\n  set $b http://backend:5000;\n"
                  "  location /api/ { proxy_pass $b; } } }\n")
HAPROXY_STATIC = "defaults\n  mode http\nbackend api\n  server api1 backend:5000\n"
HAPROXY_DNS = ("resolvers docker\n  nameserver dns 127.0.0.11:53\nbackend api\n"
               "  server-template api 1-4 backend:5000 resolvers docker init-addr none\n")


def config_of(tmp_path, edge: dict, files: dict[str, str] | None = None) -> dict:
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    compose = {"services": {"backend": {"image": "acme/backend:1"}, "frontend": {"image": "acme/frontend:1"},
                            "edge": {"ports": ["443:443"], **edge}}}
    path = tmp_path / "docker-compose.prod.yml"
    path.write_text(json.dumps(compose))
    return json.loads(run(ComposeProject(str(path), "books", {}).config()).stdout)


@pytest.mark.parametrize("edge, files, kind, says", [
    ({"image": "traefik:2.11", "command": ["--providers.file.filename=/etc/traefik/dynamic.yml"]}, None, "dns",
     "runs traefik:2.11 with --providers.file"),
    ({"image": "traefik:2.11", "command": ["--providers.docker=true", "--entrypoints.web.address=:443"],
      "volumes": ["/var/run/docker.sock:/var/run/docker.sock:ro"]}, None, "discovery",
     "runs traefik:2.11 with --providers.docker"),
    ({"image": "acme/edge:3", "volumes": ["/var/run/docker.sock:/var/run/docker.sock:ro"]}, None, "discovery",
     "mounts /var/run/docker.sock"),
    ({"image": "nginx:1.27", "volumes": ["./nginx.conf:/etc/nginx/nginx.conf:ro"]}, {"nginx.conf": NGINX_STATIC},
     "static", "nginx.conf proxies without a resolver"),
    ({"image": "nginx:1.27", "volumes": ["./conf.d:/etc/nginx/conf.d:ro"]}, {"conf.d/app.conf": NGINX_RESOLVER},
     "dns", "app.conf has a resolver"),
    ({"image": "acme/edge:2", "volumes": ["./nginx.conf:/etc/nginx/nginx.conf:ro"]},
     {"nginx.conf": "# resolver 127.0.0.11;\n" + NGINX_STATIC}, "static", "nginx's"),
    ({"image": "haproxy:3.0", "volumes": ["./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]},
     {"haproxy.cfg": HAPROXY_STATIC}, "static", "has servers and no resolvers"),
    ({"image": "haproxy:3.0", "volumes": ["./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]},
     {"haproxy.cfg": HAPROXY_DNS}, "dns", "has a resolvers section"),
])
def test_the_edge_class_is_read_from_the_edge_service(tmp_path, edge, files, kind, says):
    if files and any("/" in name for name in files):
        (tmp_path / "conf.d").mkdir()
    found = detect(config_of(tmp_path, edge, files), APP)
    assert found is not None and found.kind == kind and found.services == ("edge",), found
    assert found.why.startswith("detected: service edge ") and says in found.why, found.why
    assert found.kind in EDGE_MEANS


def test_an_edge_that_shows_nothing_or_no_edge_at_all_is_not_guessed(tmp_path):
    # An nginx whose configuration is baked into its image: nothing on this machine tells.
    assert detect(config_of(tmp_path, {"image": "acme/nginx-edge:2"}), APP) is None
    # A config file that is gone, or unreadable, tells nothing either.
    assert detect(config_of(tmp_path, {"image": "nginx:1.27", "volumes": ["./gone.conf:/etc/nginx/nginx.conf:ro"]}),
                  APP) is None
    # The app's own published ports do not make it the edge.
    assert detect({"services": {"backend": {"image": "nginx", "ports": [{"published": "80"}],
                                            "volumes": [{"type": "bind", "source": "/var/run/docker.sock"}]}}},
                  APP) is None
