"""A load test of a running studio through its public generation API, as many musicians at once would use it.

    python -m engines loadtest --url http://127.0.0.1:7860 --clients 30 --seconds 120 \
        --mix vae=1,diffusion=1,autoregressive=1 --json out/load.json

Each client is a `gradio_client.Client` in its own thread. It sends one request at a time and the next as soon
as the answer comes, for `seconds`; its engine follows the mix's weights, in a fixed order per client (client
k starts k places into the cycle), and request i of client k has seed 10,000 k + i: a rerun sends the same
traffic, and no request repeats another (whose renders the studio would already have). The requests are those
a class would send (REQUESTS: a VAE pair, one diffusion segment in 20 DDIM steps, one GPT segment), each
checked at the engine's default number of candidates, as the Generate tab sends them. After `seconds` no request is sent;
those still running are waited for up to `grace` seconds more and counted as sent but not completed.

Only loopback addresses are accepted: this tool must never load someone else's server. The server's resident
memory (RSS, from /proc) is read before the run, every half second during it (the peak) and once the studio
has been idle for `settle` seconds afterwards; the server is the process listening on the URL's port (or
`pid`). The JSON:

    {"requests", "answered", "completed", "errors", "error_messages", "latency_s": {"p50", "p95", "max"},
     "per_engine": {engine: {"requests", "answered", "completed", "errors", "latency_s"}},
     "throughput_per_minute",
     "rss_mb": {"before", "peak", "after"}, "clients", "seconds", "mix", "url"}

`answered` counts the requests that got an answer (within the grace period too), `completed` those answered
without error within `seconds` of the start; latencies are over every request answered.
"""
from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from engines.errors import StudioError

# What each engine is asked, by name: the endpoint and its parameters (studio/generation_api.py).
REQUESTS = {
    "vae": ("/generate_vae", {"mode": "RED", "n": 2}),
    "diffusion": ("/generate_diffusion", {"mode": "BLUE", "n": 1, "settings": {"steps": 20}}),
    "autoregressive": ("/generate_autoregressive", {"mode": "GREEN", "n": 1}),
}


def parse_mix(text: str) -> dict[str, int]:
    """"vae=1,diffusion=2" -> {"vae": 1, "diffusion": 2}; StudioError naming what is wrong."""
    mix = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in REQUESTS:
            raise StudioError(f"unknown engine '{name}' in --mix; use {', '.join(REQUESTS)}")
        try:
            mix[name] = int(weight) if weight.strip() else 1
        except ValueError:
            raise StudioError(f"the weight of {name} in --mix must be a whole number, got '{weight}'") from None
        if mix[name] < 0:
            raise StudioError(f"the weight of {name} in --mix must not be negative")
    if not any(mix.values()):
        raise StudioError("--mix names no engine with a positive weight, e.g. vae=1,diffusion=1,autoregressive=1")
    return mix


def check_loopback(url: str) -> int:
    """The URL's port, after checking that its host is this machine's loopback; StudioError otherwise."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise StudioError(f"--url must be an http address such as http://127.0.0.1:7860, got '{url}'")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parsed.hostname, None)}
    except socket.gaierror:
        raise StudioError(f"cannot resolve the host of --url '{url}'") from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise StudioError(f"the load test only sends traffic to this machine (127.0.0.1, ::1, localhost); "
                          f"'{parsed.hostname}' is not a loopback address")
    return parsed.port or (443 if parsed.scheme == "https" else 80)


def listening_pid(port: int) -> int | None:
    """The process listening on a local TCP port, from /proc (Linux); None when it cannot be told."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:   # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for pid in filter(str.isdigit, os.listdir("/proc") if inodes else []):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
        except OSError:
            continue
    return None


def rss_mb(pid: int | None) -> float | None:
    """A process's resident memory in MB (VmRSS), None without one."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]   # nearest rank
    return {"p50": round(statistics.median(ordered), 3), "p95": round(p95, 3), "max": round(ordered[-1], 3)}


@dataclass
class Outcome:
    engine: str
    sent: float                   # seconds from the start
    latency: float | None = None  # None: not answered within the grace period
    error: str | None = None


@dataclass
class LoadTest:
    url: str
    clients: int = 30
    seconds: float = 120.0
    mix: dict = field(default_factory=lambda: {"vae": 1, "diffusion": 1, "autoregressive": 1})
    grace: float = 120.0          # how long requests still running at the end are waited for
    settle: float = 5.0           # idle seconds before the memory after the run is read
    pid: int | None = None

    def run(self) -> dict:
        from gradio_client import Client

        port = check_loopback(self.url)
        if self.clients < 1 or self.seconds <= 0:
            raise StudioError("--clients must be at least 1 and --seconds more than 0")
        pid = self.pid or listening_pid(port)
        try:
            connections = [Client(self.url, verbose=False, download_files=False, analytics_enabled=False)
                           for _ in range(self.clients)]
        except Exception as exc:  # noqa: BLE001  (connection refused, not a Gradio app, ...)
            raise StudioError(f"cannot reach a studio at {self.url}: {exc}") from None
        cycle = [name for name, weight in self.mix.items() for _ in range(weight)]
        outcomes: list[Outcome] = []
        lock, stop_sampling = threading.Lock(), threading.Event()
        memory = {"before": rss_mb(pid), "peak": rss_mb(pid)}

        def sample_memory():
            while not stop_sampling.wait(0.5):
                now = rss_mb(pid)
                if now is not None and (memory["peak"] is None or now > memory["peak"]):
                    memory["peak"] = now

        started = time.monotonic()
        deadline, last_answer = started + self.seconds, started + self.seconds + self.grace

        def client(k: int):
            engines = itertools.islice(itertools.cycle(cycle), k % len(cycle), None)
            for i, engine in enumerate(engines):
                now = time.monotonic()
                if now >= deadline:
                    return
                api_name, params = REQUESTS[engine]
                outcome = Outcome(engine, sent=now - started)
                # a seed of its own: a repeated request would find its renders already made
                job = connections[k].submit(api_name=api_name, seed=k * 10_000 + i, **params)
                try:
                    job.result(timeout=max(last_answer - time.monotonic(), 0.1))
                    outcome.latency = time.monotonic() - now
                except TimeoutError:
                    job.cancel()
                except Exception as exc:  # noqa: BLE001  (an error the server sent back is what is counted)
                    outcome.latency, outcome.error = time.monotonic() - now, f"{type(exc).__name__}: {exc}"
                with lock:
                    outcomes.append(outcome)
                if outcome.latency is None:
                    return

        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(self.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=max(last_answer - time.monotonic(), 0) + 5)
        stop_sampling.set()
        time.sleep(self.settle)
        memory["after"] = rss_mb(pid)
        for connection in connections:
            connection.close()
        return self.report(outcomes, memory)

    def report(self, outcomes: list[Outcome], memory: dict) -> dict:
        def summary(rows: list[Outcome]) -> dict:
            answered = [o for o in rows if o.latency is not None]
            completed = [o for o in answered if o.error is None and o.sent + o.latency <= self.seconds]
            return {"requests": len(rows), "answered": len(answered), "completed": len(completed),
                    "errors": sum(o.error is not None for o in rows),
                    "latency_s": percentiles([o.latency for o in answered])}

        result = summary(outcomes)
        result["error_messages"] = sorted({o.error for o in outcomes if o.error})[:10]
        result["per_engine"] = {name: summary([o for o in outcomes if o.engine == name])
                                for name in self.mix if self.mix[name]}
        result["throughput_per_minute"] = round(result["completed"] * 60 / self.seconds, 2)
        result["rss_mb"] = {"before": memory["before"], "peak": memory["peak"], "after": memory["after"]}
        result.update(clients=self.clients, seconds=self.seconds, mix=self.mix, url=self.url)
        return result
