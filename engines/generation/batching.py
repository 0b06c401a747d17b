"""Requests from many users that arrive together share one batch: a queue per engine, a cap on requests and
rows per batch, and a short gathering window while others are arriving.

    batcher = Batcher(generator, max_batch=16, window_s=0.02)
    segments = batcher.run(request, on_step)   # from any thread, like generator.run: blocks until its rows are done

Why: a batch of 8 costs each engine much less than 8 batches of 1 (the GPT at a small batch is bound by
reading its weights, a diffusion step of 64 rows by far less than 8 steps of 8), so 30 musicians clicking at
once wait seconds, not a minute (README, "Many musicians at once").

How: a request that finds its engine idle samples at once, in its own thread, exactly as without batching
(a lone user never waits, nor pays a hand-over to another thread). One that finds it busy joins the engine's
queue and waits: one dispatcher thread per engine takes the oldest queued request and every queued one that
may share its batch (`generator.batch_key`: the same key; None = it always runs alone, in its own thread),
up to `max_batch` requests and the engine's `batch_rows` rows, waits up to the window for more while the
batch is not full, and hands them to `generator.run_batch`. Requests that come while a batch runs queue for
the next one, so under load batches fill by themselves.

Each request keeps what it would get alone: its own seed (its rows draw their noise from it), mode, attributes
and live view. `run_batch` hands each request's rows back as soon as they are done, and turning rows into
segments happens in the request's own thread. Stop (on_step returning True) ends one request's rows at that
step; the others go on. A request that fails its own checks fails alone; a failure of the shared batch fails
every request still in it, with the same message.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Hashable

from engines.generation.base import OnStep, Request
from engines.music.notes import Segment


class Job:
    """One request waiting in a batch: what run_batch reads (`request`, `on_step`, `rows`) and calls
    (`finish` with a function that makes its segments, or `fail`)."""

    def __init__(self, request: Request, on_step: OnStep | None, key: Hashable):
        self.request, self.on_step, self.key = request, on_step, key
        self.rows = int(request.n)
        self._make: Callable[[], list[Segment]] | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def finish(self, make: Callable[[], list[Segment]]) -> None:
        """Its rows are done: `make()` (called in the request's own thread) turns them into segments."""
        if not self.done:
            self._make = make
            self._done.set()

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self._error = error
            self._done.set()

    def wait(self) -> list[Segment]:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._make()


def row_spans(jobs: list[Job]) -> list[tuple[int, int]]:
    """Each job's rows in its batch: (first, past the last), in job order."""
    ends = [sum(job.rows for job in jobs[:i + 1]) for i in range(len(jobs))]
    return [(end - job.rows, end) for job, end in zip(jobs, ends)]


class Batcher:
    """Batches one engine's requests across users (module docstring). `max_batch` 1 runs every request alone."""

    def __init__(self, generator, max_batch: int = 16, window_s: float = 0.02, name: str = ""):
        self.generator = generator
        self.max_batch = int(max_batch)
        self.window_s = float(window_s)
        self.name = name or getattr(generator, "name", "engine")
        self._queue: deque[Job] = deque()
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False   # the engine is sampling (a batch, or a request in its own thread)
        self.batches: deque[int] = deque(maxlen=1000)   # requests per batch sampled, the latest last

    def run(self, request: Request, on_step: OnStep | None = None) -> list[Segment]:
        """The request's segments, as generator.run(request, on_step) gives them."""
        key = self.generator.batch_key(request) if self.max_batch > 1 else None
        if key is None:
            return self.generator.run(request, on_step)
        with self._lock:
            alone = not self._queue and not self._busy
            if alone:   # the engine is idle: sample here and now
                self._busy = True
                self.batches.append(1)
            else:
                job = Job(request, on_step, key)
                self._queue.append(job)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._dispatch, daemon=True, name=f"{self.name}-batches")
                    self._thread.start()
                self._lock.notify_all()
        if not alone:
            return job.wait()
        try:
            return self.generator.run(request, on_step)
        finally:
            with self._lock:
                self._busy = False
                self._lock.notify_all()

    def _take(self) -> list[Job]:
        """The next batch, once the engine is free: the oldest job and the queued jobs that may share its batch,
        when the batch is full or the window is over. Called with the lock held."""
        while not self._queue or self._busy:
            self._lock.wait()
        first = self._queue[0]
        deadline = time.monotonic() + self.window_s
        max_rows = self.generator.batch_rows or self.generator.max_batch
        while True:
            batch, rows = [first], first.rows
            for job in list(self._queue)[1:]:
                if job.key == first.key and len(batch) < self.max_batch and rows + job.rows <= max_rows:
                    batch.append(job)
                    rows += job.rows
            left = deadline - time.monotonic()
            if len(batch) >= self.max_batch or left <= 0:
                break
            self._lock.wait(left)
        for job in batch:
            self._queue.remove(job)
        self._busy = True
        return batch

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                batch = self._take()
            self._sample(batch)
            with self._lock:
                self._busy = False
                self._lock.notify_all()

    def _sample(self, batch: list[Job]) -> None:
        """One batch through the engine; every job of it ends finished or failed."""
        self.batches.append(len(batch))
        try:
            if len(batch) == 1:   # nothing to share: the engine's own path
                job = batch[0]
                segments = self.generator.run(job.request, job.on_step)
                job.finish(lambda: segments)
            else:
                self.generator.run_batch(batch)
        except BaseException as exc:  # noqa: BLE001  (every request still waiting hears why)
            for job in batch:
                job.fail(exc)
        for job in batch:
            job.fail(RuntimeError(f"the {self.name} batch ended without this request's results"))
