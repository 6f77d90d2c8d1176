"""Which way a check of the backend reaches it. The public URL first; a path the edge
routes to another service (the runbook's Traefik sends only /api to the backend, so
/health and /ready reach the frontend's single-page app, which answers 200 with its
page) is asked of each running backend container on its own address instead, and the
report says which way each check went. A page is not the backend's answer: passing
on it would prove nothing."""

from dataclasses import dataclass

import httpx

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.adapters.http import client, http_client
from smartrelease.adapters.images import engine
from smartrelease.adapters.running import http_url, service_containers

PUBLIC = "through the public URL"


@dataclass(frozen=True)
class Answer:
    response: httpx.Response
    route: str  # PUBLIC, or which containers were asked on their own address


def is_page(response: httpx.Response) -> bool:
    """An HTML page: what a single-page app answers for any path it does not know."""
    return response.headers.get("content-type", "").split(";")[0].strip().lower() == "text/html"


def get(env: Environment, path: str, step: str, timeout_s: float = 5, web: httpx.Client | None = None) -> Answer:
    """GET `path` of the backend: through the public URL (`web`, a client of it kept
    open by a caller that polls, else one of its own), or, where the edge answers it
    with a page, from every running backend container on its own address (the first
    answer that is not 200 is the one returned). Connection errors raise StepFailed
    (transient)."""
    try:
        if web is not None:
            public = web.get(path)
        else:
            with client(env.target, timeout_s=timeout_s) as own:
                public = own.get(path)
    except httpx.HTTPError as exc:
        raise StepFailed(step, f"{path}: {type(exc).__name__}: {exc}", transient=True) from None
    if not (public.status_code == 200 and is_page(public)):
        return Answer(public, PUBLIC)
    return _from_the_containers(env, path, step, timeout_s)


def _from_the_containers(env: Environment, path: str, step: str, timeout_s: float) -> Answer:
    t = env.target
    found = [c for c in service_containers(engine(timeout_s=30), t.compose_project or "", t.backend_service)
             if c.status == "running" and c.address]
    why = f"{path} through the public URL answered 200 with a page (the edge routes it to another service)"
    if not found:
        raise StepFailed(step, f"{why}, and no {t.backend_service} container runs to ask on its own address",
                         transient=True)
    answers = []
    for c in found:
        port = t.listen_port("backend", c.exposed)
        if port is None:
            raise StepFailed(step, f"{why}; it is asked of the backend on its own address, whose port is unknown "
                                   f"(its image exposes {', '.join(map(str, c.exposed)) or 'none'}): set "
                                   "RELEASE_BACKEND_PORT")
        try:
            with http_client("", timeout_s=timeout_s) as web:
                answers.append(web.get(http_url(c.address, port, path)))
        except httpx.HTTPError as exc:
            raise StepFailed(step, f"{why}; {c.name} on its own address: {type(exc).__name__}: {exc}",
                             transient=True) from None
    route = f"on the backend's own address ({len(found)} container(s), port {port}): {why}"
    return Answer(next((a for a in answers if a.status_code != 200), answers[0]), route)
