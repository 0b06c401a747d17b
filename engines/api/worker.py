"""Long engine work for a streaming handler: run it on a worker thread and hand its progress updates to the
caller's thread as they come (engines/api/evaluation.py, arrange.py).

    result = yield from streamed(lambda put: work(on_progress=put), "evaluate", "evaluation failed")
"""
from __future__ import annotations

import queue
import threading

from engines.errors import StudioError


def streamed(work, name: str, failure: str):
    """A generator: runs `work(put)` on a daemon thread named `name`, yields each update it `put`s, and returns
    what `work` returned. An error raised there is raised here: a StudioError as it is, anything else as a
    StudioError "`failure`: ..."."""
    updates: queue.Queue = queue.Queue()
    result: dict = {}

    def run():
        try:
            result["value"] = work(updates.put)
        except Exception as exc:  # noqa: BLE001  (raised in the caller's thread below)
            result["error"] = exc
        finally:
            updates.put(None)

    threading.Thread(target=run, name=name, daemon=True).start()
    while (update := updates.get()) is not None:
        yield update
    if "error" in result:
        error = result["error"]
        raise error if isinstance(error, StudioError) else StudioError(f"{failure}: {error}")
    return result["value"]
