"""A bounded load generator for the sandbox: GET requests at a fixed rate (open loop:
one is sent every 1/rate s whether or not the earlier ones have been answered, as
users do), to 127.0.0.1 or localhost only, for at most `max_s` seconds. Each answer
is kept with its time, so a window (the launch of a release) can be looked at apart.

    with Load(url, rate=100, ca=ca_pem) as load:
        ... run a release ...
    stats = load.stats()             # everything
    stats = load.stats(t0, t1)       # the requests sent between two time.monotonic()s

A request fails when it gets no answer (refused, reset, timed out) or a 5xx.
"""

import asyncio
import math
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Sample:
    sent: float  # time.monotonic()
    latency_s: float
    outcome: str  # the status code, or the exception's name

    @property
    def failed(self) -> bool:
        return not self.outcome.isdigit() or self.outcome.startswith("5")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass(frozen=True)
class Stats:
    requests: int
    failed: int
    rate: float  # requests sent per second over the window
    p50_ms: float
    p99_ms: float
    max_ms: float
    failures: dict[str, int] = field(default_factory=dict)  # outcome -> how many

    def line(self) -> str:
        why = ", ".join(f"{k} x{v}" for k, v in sorted(self.failures.items()))
        return (f"{self.requests} requests at {self.rate:.0f}/s, {self.failed} failed"
                + (f" ({why})" if why else "") + f"; p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
                f"max {self.max_ms:.1f} ms")


def summarize(samples: list[Sample], seconds: float) -> Stats:
    latencies = [s.latency_s * 1000 for s in samples]
    failures: dict[str, int] = {}
    for s in samples:
        if s.failed:
            failures[s.outcome] = failures.get(s.outcome, 0) + 1
    return Stats(requests=len(samples), failed=sum(failures.values()), rate=len(samples) / seconds if seconds else 0.0,
                 p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99),
                 max_ms=max(latencies, default=0.0), failures=failures)


class Load:
    def __init__(self, url: str, *, rate: float, ca: str | None = None, max_s: float = 600, timeout_s: float = 10):
        host = urlsplit(url).hostname
        if host not in LOCAL_HOSTS:
            raise ValueError(f"load is only sent to this machine (127.0.0.1 or localhost), not {host!r}")
        if not 0 < rate <= 1000 or not 0 < max_s <= 3600:
            raise ValueError("rate must be in (0, 1000] requests/s and max_s in (0, 3600] s")
        self.url, self.rate, self.max_s, self.timeout_s = url, rate, max_s, timeout_s
        self.verify = ssl.create_default_context(cafile=ca) if ca else True
        self.samples: list[Sample] = []
        self.started = self.ended = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True, name="load")

    def __enter__(self) -> "Load":
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    async def _one(self, client: httpx.AsyncClient, sent: float) -> None:
        try:
            outcome = str((await client.get(self.url)).status_code)
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        self.samples.append(Sample(sent, time.monotonic() - sent, outcome))

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(verify=self.verify, timeout=self.timeout_s, limits=limits) as client:
            pending: set[asyncio.Task] = set()
            n = 0
            while not self._stop.is_set():
                due = self.started + n / self.rate
                if due - self.started > self.max_s:
                    break
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                task = asyncio.create_task(self._one(client, time.monotonic()))
                pending.add(task)
                task.add_done_callback(pending.discard)
                n += 1
            self.ended = time.monotonic()
            if pending:
                await asyncio.wait(pending)

    def stats(self, since: float | None = None, until: float | None = None) -> Stats:
        """Of the requests sent in [since, until] (default: the whole run)."""
        since = self.started if since is None else since
        until = (self.ended or time.monotonic()) if until is None else until
        window = [s for s in self.samples if since <= s.sent <= until]
        return summarize(window, max(until - since, 1e-9))
