"""What the served studio adds to generation: the same requests timed in the engine (StudioEngine.generate, no
live view) and through the served studio's Generate button with the live view on, until the cards arrive.

    .venv/bin/python scripts/bench_live_view.py [--repeats 12] > out/live-view.json

The studio is called as its page calls it, over Gradio's HTTP protocol (a queue join, the event stream of live
views, then the event that draws the cards), by a client that keeps one session and one connection, as a
browser and gradio_client do; no browser draws on this machine's two cores meanwhile (a musician's browser runs
on their own machine). The Generate button's events are private to the page, so gradio_client cannot name them;
this client sends what the page sends.

Requests: diffusion DDIM-50 x4 and the GPT x4 (prompt guidance 3, its audio-codec preview included in both
places), one candidate per result (the raw model: the comparison is of the studio, not of checking), with the
Generate tab's defaults (piano, mf) in the engine too. Each repeat uses its own seed, the same in both places,
engine and studio alternated so that a busy moment weighs on both. Prints JSON with medians: engine_seconds,
studio_seconds (the click to the cards, as the client sees it), handler_seconds (the studio's own "Took N s":
request to cards inside the server), and ratio (the median of each seed's studio / engine; issue 20's bar:
<= 1.2). Needs the shipped checkpoints.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STUDIO_DEFAULTS = {"instrument": 1, "dynamics": "mf"}   # what the Generate tab asks when left as it opens


def settings_for(name: str) -> dict:
    if name == "diffusion":
        return {"steps": 50}
    from engines.data.captions import prompt_for
    return {"prompt": prompt_for("BLUE")}


def engine_seconds(engine, name: str, seed: int) -> float:
    from engines.api import Request

    started = time.perf_counter()
    engine.generate(Request(engine=name, mode="BLUE", n=4, seed=seed, candidates=1, settings=settings_for(name),
                            **STUDIO_DEFAULTS))
    return time.perf_counter() - started


class GenerateButton:
    """The Generate button of a served studio, pressed over Gradio's protocol: the run (queued; its live views
    arrive as a stream of events) and the event chained after it that draws the cards (not queued)."""

    def __init__(self, url: str):
        import httpx

        self.url, self.http, self.session = url, httpx.Client(timeout=600), uuid.uuid4().hex[:11]
        config = self.http.get(f"{url}/config").json()
        self.components = {c["id"]: c for c in config["components"]}
        button = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "generate-button")
        self.button = button
        self.run_event = next(d for d in config["dependencies"] if [button, "click"] in d["targets"])
        self.cards_event = next(d for d in config["dependencies"] if d.get("trigger_after") == self.run_event["id"])

    def values(self, event: dict, asked: dict) -> list:
        """The page's values for an event's inputs: each control as it opens, unless `asked` (by elem_id)."""
        out = []
        for i in event["inputs"]:
            props = self.components[i]["props"]
            out.append(asked.get(props.get("elem_id"), props.get("value")))
        return out

    def press(self, asked: dict) -> tuple[float, str, int]:
        """(seconds from the click to the cards, the status line shown, live views received)."""
        started = time.perf_counter()
        self.http.post(f"{self.url}/gradio_api/queue/join", json={
            "data": self.values(self.run_event, asked), "event_data": None, "fn_index": self.run_event["id"],
            "trigger_id": self.button, "session_hash": self.session}).raise_for_status()
        views = 0
        with self.http.stream("GET", f"{self.url}/gradio_api/queue/data?session_hash={self.session}") as events:
            for line in events.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                views += message.get("msg") == "process_generating"
                if message.get("msg") == "process_completed":
                    if not message.get("success", True):
                        raise RuntimeError(f"the run failed: {message}")
                    break
        reply = self.http.post(f"{self.url}/gradio_api/run/predict", json={
            "data": self.values(self.cards_event, {}), "fn_index": self.cards_event["id"], "trigger_id": None,
            "session_hash": self.session, "event_data": None})
        reply.raise_for_status()
        return time.perf_counter() - started, reply.json()["data"][0], views - 1   # the last hands the run over


def studio_seconds(button: GenerateButton, name: str, seed: int) -> tuple[float, float, int]:
    asked = {"generate-engine": name, "generate-mode": "BLUE", "generate-seed": seed, "generate-count": 4,
             "generate-candidates": 1}
    if name == "diffusion":
        asked["generate-steps"] = 50
    else:
        asked["generate-prompt"] = settings_for(name)["prompt"]
    seconds, status, views = button.press(asked)
    took = re.search(r"Took ([\d.]+) s", status)
    if took is None or "the analyzer hears BLUE" not in status:
        raise RuntimeError(f"unexpected status: {status}")
    return seconds, float(took.group(1)), views


def main() -> None:
    from engines.api import Request, StudioEngine
    from engines.config import load_config
    from tests.helpers import start_studio, stop_studio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--engines", default="diffusion,autoregressive")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="live-view-"))
    proc, url = start_studio([f"sessions.database={folder}/private/db.sqlite", f"sessions.stimuli_dir={folder}/s"],
                             folder / "studio.log")
    result = {"repeats": args.repeats}
    engine = StudioEngine(load_config())
    engine.generate(Request(engine="vae", mode="RED", n=1, candidates=1))   # loads, warms the renderer
    try:
        button = GenerateButton(url)
        for name in args.engines.split(","):
            studio_seconds(button, name, 999)   # the first request loads the engine's checkpoint
            engine_seconds(engine, name, 999)
            runs = {"engine": [], "studio": [], "handler": [], "live_views": []}
            for seed in range(1, args.repeats + 1):   # alternated, so a busy machine weighs on both alike
                runs["engine"].append(engine_seconds(engine, name, seed))
                served, handler, views = studio_seconds(button, name, seed)
                runs["studio"].append(served)
                runs["handler"].append(handler)
                runs["live_views"].append(views)
            # each seed's own ratio: seeds differ in length (the GPT writes 1-2 s), pairs do not
            ratio = statistics.median(s / e for s, e in zip(runs["studio"], runs["engine"]))
            result[name] = {"engine_seconds": round(statistics.median(runs["engine"]), 3),
                            "studio_seconds": round(statistics.median(runs["studio"]), 3),
                            "handler_seconds": round(statistics.median(runs["handler"]), 3),
                            "ratio": round(ratio, 3),
                            "runs": {k: [round(x, 3) for x in v] for k, v in runs.items()}}
    finally:
        stop_studio(proc)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
