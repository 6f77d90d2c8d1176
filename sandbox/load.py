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
from collections import Counter
import math
import os
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
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


@dataclass(frozen=True)
class Writes:
    """What the rows show of a writing load (Load(post_as=...)): request n wrote the
    row named <post_as>-<n>."""

    answered: int  # writes answered 201
    lost: int  # answered 201, and no row: a write the app said it made and did not keep
    doubled: int  # rows beyond one per request: a write sent twice
    unanswered: int  # a row, and an answer that failed: the client could not know it was made

    @property
    def ok(self) -> bool:
        return not self.lost and not self.doubled

    def line(self) -> str:
        return (f"{self.answered} answered 201: {self.lost} lost, {self.doubled} doubled; "
                f"{self.unanswered} written with the answer lost")


def check_writes(samples: list[Sample], names: list[str]) -> Writes:
    """`samples` of a writing load; `names`: every row's name with its tag."""
    # Request n is sent at start + n/rate: the n-th by sending time.
    answered = {n for n, s in enumerate(sorted(samples, key=lambda s: s.sent)) if s.outcome == "201"}
    written = Counter(int(name.rsplit("-", 1)[1]) for name in names)
    return Writes(len(answered), len(answered - set(written)), sum(c - 1 for c in written.values()),
                  len(set(written) - answered))


class Load:
    """Runs in a process of its own (`python -m sandbox.load`): in the process of a
    flow it would share the GIL with Prefect's engine, and its latencies would measure
    that. time.monotonic() is the machine's clock on Linux, so its samples' times
    compare with the caller's."""

    def __init__(self, url: str, *, rate: float, ca: str | None = None, max_s: float = 600, timeout_s: float = 10,
                 nice: int = 0, post_as: str = ""):
        host = urlsplit(url).hostname
        if host not in LOCAL_HOSTS:
            raise ValueError(f"load is only sent to this machine (127.0.0.1 or localhost), not {host!r}")
        if not 0 < rate <= 1000 or not 0 < max_s <= 3600:
            raise ValueError("rate must be in (0, 1000] requests/s and max_s in (0, 3600] s")
        if not -20 <= nice <= 19:
            raise ValueError("nice must be in [-20, 19]")
        if post_as and not post_as.isidentifier():
            raise ValueError("post_as must be a word: it names the rows the requests create")
        self.url, self.rate, self.ca, self.max_s, self.timeout_s = url, rate, ca, max_s, timeout_s
        # Requests that write: POST {"name": "<post_as>-<n>"}, each a row of its own,
        # so the rows found after a run can be checked against the answers.
        self.post_as = post_as
        # Below 0 (root only) the generator is scheduled before the machine's other
        # work: users' clients do not share the server's cores, so its latencies
        # should not include waiting for them.
        self.nice = nice
        self.samples: list[Sample] = []
        self.started = self.ended = 0.0
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> "Load":
        argv = [sys.executable, "-m", "smartrelease.sandbox.load", self.url, str(self.rate), self.ca or "", str(self.max_s),
                str(self.timeout_s), self.post_as]
        self._process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                         cwd=Path(__file__).resolve().parent.parent,
                                         preexec_fn=(lambda: os.nice(self.nice)) if self.nice else None)
        started = self._process.stdout.readline().split()  # "started <monotonic>"
        if not started:
            raise RuntimeError(f"the load generator did not start (exit {self._process.wait()})")
        self.started = float(started[1])
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sending, wait for the answers still due, and read every sample."""
        if self._process is None:
            return
        out, _ = self._process.communicate(input="stop\n", timeout=self.timeout_s + 60)
        lines = out.splitlines()
        self.ended = float(lines[-1].split()[1])  # "ended <monotonic>"
        self.samples = [Sample(float(sent), float(latency), outcome)
                        for sent, latency, outcome in (line.split() for line in lines[:-1])]
        self._process = None

    def failed_line(self, limit: int = 10) -> str:
        """The failed requests, for a test's message: when each was sent (after the load
        began), how long it took and what it got; after stop()."""
        failed = [s for s in self.samples if s.failed]
        return "; ".join(f"+{s.sent - self.started:.1f} s: {s.outcome} after {s.latency_s:.2f} s"
                         for s in failed[:limit]) + (f"; and {len(failed) - limit} more" if len(failed) > limit else "")

    def stats(self, since: float | None = None, until: float | None = None) -> Stats:
        """Of the requests sent in [since, until] (default: the whole run); after stop()."""
        since = self.started if since is None else since
        until = self.ended if until is None else until
        window = [s for s in self.samples if since <= s.sent <= until]
        return summarize(window, max(until - since, 1e-9))


async def generate(url: str, rate: float, ca: str | None, max_s: float, timeout_s: float,
                   stop: threading.Event, post_as: str = "") -> list[Sample]:
    """Open loop: request n is sent at start + n/rate, until `stop` or max_s; a GET,
    or with `post_as` a POST of {"name": "<post_as>-<n>"}."""
    samples: list[Sample] = []
    verify = ssl.create_default_context(cafile=ca) if ca else True
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)

    async def one(client: httpx.AsyncClient, sent: float, n: int) -> None:
        try:
            answer = await (client.post(url, json={"name": f"{post_as}-{n}"}) if post_as else client.get(url))
            outcome = str(answer.status_code)
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        samples.append(Sample(sent, time.monotonic() - sent, outcome))

    async with httpx.AsyncClient(verify=verify, timeout=timeout_s, limits=limits) as client:
        started, pending, n = time.monotonic(), set(), 0
        print(f"started {started}", flush=True)
        while not stop.is_set():
            due = started + n / rate
            if due - started > max_s:
                break
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            task = asyncio.create_task(one(client, time.monotonic(), n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        ended = time.monotonic()
        if pending:
            await asyncio.wait(pending)
    return samples + [Sample(ended, 0.0, "ended")]


def main(argv: list[str]) -> None:
    url, rate, ca, max_s, timeout_s = argv[0], float(argv[1]), argv[2] or None, float(argv[3]), float(argv[4])
    post_as = argv[5] if len(argv) > 5 else ""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    *samples, end = asyncio.run(generate(url, rate, ca, max_s, timeout_s, stop, post_as))
    sys.stdout.write("".join(f"{s.sent} {s.latency_s} {s.outcome}\n" for s in samples) + f"ended {end.sent}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
