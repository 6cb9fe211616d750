"""Fair scheduling of the server's model work (embeddings, reranking, index search) onto the engine threads.

Every request becomes a :class:`Job`: its items (texts to embed, documents to score, query vectors
to look up in a search index), what each costs the engine, and its :class:`Work` (the call that
turns a list of items into one row per item, with each item's receipt: :class:`Rows`). The items
are cut into sub-batches of at most ``max_texts`` items and ``max_tokens`` tokens (one engine
decode's worth by default).

Each model (and the search index) has a lane: one engine thread that runs one call of it at a
time, so the embedding model keeps answering while the reranker scores a long document (and the
other way round). Within a lane, each engine call is built from the sub-batches of several jobs:

* a job that has not been served yet ("fresh", usually a small request) leads the next call,
  unless a fresh job led the previous one while older jobs waited: a new request waits for
  at most one sub-batch of the large requests before it;
* jobs already served take turns (round-robin), and never wait two calls in a row for fresh
  ones, so a large request advances at least every second call however many small requests
  arrive;
* sub-batches of other jobs with equal work (same model, same options) ride along while the
  call has room (concurrent clients share decodes);
* a job whose caller went away (its client disconnected, or its handler was cancelled) is
  dropped at once: its remaining sub-batches never run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import EmbedderClosedError

__all__ = ["Job", "Rows", "Scheduler", "SchedulerObserver", "Work", "split_batches"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rows:
    """What an engine call gives back, and what :meth:`Scheduler.submit` answers.

    Attributes:
        values: One row per item, in order (vectors, scores; an object array for search hits).
        receipts: One per item: what happened to it (a :class:`~qwen_embed.Receipt`), or ``None``
            where the call keeps none.
    """

    values: np.ndarray
    receipts: list[Any]


class Work(Hashable, Protocol):
    """One kind of engine call: hashable, and equal for calls that may share a decode.

    ``kind`` names the lane and the route in metrics (``"embeddings"``, ``"rerank"``, ``"search"``);
    calling it runs on the lane's engine thread and returns one row per item, in order (a bare
    array: no receipts).
    """

    @property
    def kind(self) -> str: ...

    def __call__(self, items: list[Any]) -> Rows | np.ndarray: ...


class SchedulerObserver(Protocol):
    """What the scheduler reports (the server's metrics implement it)."""

    def batch_done(self, *, kind: str, texts: int, tokens: int, seconds: float) -> None: ...

    def queue_changed(self, *, jobs: int, inputs: int) -> None: ...

    def inputs_dropped(self, *, kind: str, count: int) -> None: ...


def split_batches(costs: Sequence[int], *, max_texts: int, max_tokens: int) -> list[tuple[int, int]]:
    """Cut texts (in order) into ``(start, end)`` runs within both limits; a text over ``max_tokens`` runs alone."""
    runs: list[tuple[int, int]] = []
    start, used = 0, 0
    for i, cost in enumerate(costs):
        if i > start and (i - start >= max_texts or used + cost > max_tokens):
            runs.append((start, i))
            start, used = i, 0
        used += cost
    if len(costs) > start:
        runs.append((start, len(costs)))
    return runs


@dataclass(eq=False)
class Job:
    """One request's items, their costs, its work, and where its rows go."""

    items: list[Any]
    costs: list[int]
    work: Work
    future: asyncio.Future[Rows]
    runs: deque[tuple[int, int]] = field(default_factory=deque)
    out: np.ndarray | None = None
    receipts: list[Any] = field(default_factory=list)
    missing: int = 0

    @property
    def dropped(self) -> bool:
        return self.future.done()

    def remaining_inputs(self) -> int:
        return sum(end - start for start, end in self.runs)


class Scheduler:
    """Runs :class:`Job` sub-batches fairly, one engine thread per model (see the module docstring).

    ``batches`` counts the engine calls made, by work kind.

    Args:
        max_texts: Most items in one engine call.
        max_tokens: Most tokens in one engine call (a longer single item runs alone).
        wait: Seconds a lane waits, when idle, for concurrent requests to arrive before its first call.
        observer: Receives batch timings, queue depth and dropped inputs.
    """

    def __init__(
        self,
        *,
        max_texts: int,
        max_tokens: int,
        wait: float,
        observer: SchedulerObserver | None = None,
    ) -> None:
        self._max_texts = max_texts
        self._max_tokens = max_tokens
        self._wait = wait
        self._observer = observer
        self._lanes: dict[str, _Lane] = {}
        self._started = self._stopped = False
        self.batches: Counter[str] = Counter()

    def start(self) -> None:
        """Called on the event loop before the first :meth:`submit` (the app's lifespan does)."""
        self._started = True

    async def stop(self) -> None:
        """Cancel the waiting jobs, then wait for the engine calls in progress (at most one sub-batch a lane)."""
        self._stopped = True
        lanes, self._lanes = list(self._lanes.values()), {}
        await asyncio.gather(*(lane.stop() for lane in lanes))

    async def submit(self, items: list[Any], costs: list[int], work: Work) -> Rows:
        """Queue ``items`` and wait for their rows; cancelling the caller drops the job's waiting sub-batches."""
        assert self._started, "Scheduler.start() was not called"
        if self._stopped:
            raise EmbedderClosedError("the server is shutting down")
        lane = self._lanes.get(work.kind)
        if lane is None:
            lane = self._lanes[work.kind] = _Lane(self, work.kind)
        job = Job(items, costs, work, asyncio.get_running_loop().create_future())
        job.runs.extend(split_batches(costs, max_texts=self._max_texts, max_tokens=self._max_tokens))
        job.missing = len(items)
        job.receipts = [None] * len(items)
        return await lane.run(job)

    def _report_queue(self) -> None:
        if self._observer is None:
            return
        jobs = [job for lane in self._lanes.values() for job in lane.queued()]
        self._observer.queue_changed(jobs=len(jobs), inputs=sum(job.remaining_inputs() for job in jobs))


class _Lane:
    """One model's queue and engine thread, with the fair policy of the module docstring."""

    def __init__(self, owner: Scheduler, kind: str) -> None:
        self._owner = owner
        self._kind = kind
        self._fresh: deque[Job] = deque()
        self._rotation: deque[Job] = deque()
        self._rotation_skipped = False
        self._running: list[Job] = []  # the jobs of the engine call in progress
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"qwen-embed-engine-{kind}")
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"qwen-embed-scheduler-{kind}")

    def queued(self) -> list[Job]:
        return [job for job in (*self._fresh, *self._rotation) if not job.dropped]

    async def run(self, job: Job) -> Rows:
        self._fresh.append(job)
        self._owner._report_queue()
        self._wake.set()
        try:
            return await job.future
        finally:
            if not job.future.done() or job.future.cancelled():
                job.future.cancel()
                self._forget(job)
            elif job.runs:  # failed: its other sub-batches are of no use
                self._forget(job, dropped=False)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for job in (*self._fresh, *self._rotation, *self._running):
            job.future.cancel()
        self._fresh.clear()
        self._rotation.clear()
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        owner = self._owner
        while True:
            if not self._fresh and not self._rotation:
                self._wake.clear()
                await self._wake.wait()
                if owner._wait > 0:
                    await asyncio.sleep(owner._wait)  # let concurrent requests arrive and share the call
            batch = self._next_batch()
            if not batch:
                continue
            work = batch[0][0].work
            items = [item for job, start, end in batch for item in job.items[start:end]]
            tokens = sum(sum(job.costs[start:end]) for job, start, end in batch)
            began = time.perf_counter()
            self._running = [job for job, _, _ in batch]
            try:
                made = await loop.run_in_executor(self._executor, work, items)
            except Exception as error:
                self._running = []
                for job, _, _ in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
                owner._report_queue()
                continue
            self._running = []
            rows = made if isinstance(made, Rows) else Rows(made, [None] * len(items))
            owner.batches[self._kind] += 1
            if owner._observer is not None:
                seconds = time.perf_counter() - began
                owner._observer.batch_done(kind=self._kind, texts=len(items), tokens=tokens, seconds=seconds)
            self._deliver(batch, rows)
            owner._report_queue()

    def _next_batch(self) -> list[tuple[Job, int, int]]:
        self._prune()
        if not self._fresh and not self._rotation:
            return []
        # A fresh job leads, unless a fresh job led last time while the rotation waited.
        lead_fresh = bool(self._fresh) and (not self._rotation or not self._rotation_skipped)
        self._rotation_skipped = lead_fresh and bool(self._rotation)
        lead = self._fresh[0] if lead_fresh else self._rotation[0]
        chosen: list[tuple[Job, int, int]] = []
        n_texts = n_tokens = 0
        owner = self._owner
        for job in (lead, *self._fresh, *self._rotation):
            if job.work != lead.work or any(job is seen for seen, _, _ in chosen):
                continue
            start, end = job.runs[0]
            cost = sum(job.costs[start:end])
            if chosen and (n_texts + end - start > owner._max_texts or n_tokens + cost > owner._max_tokens):
                continue
            chosen.append((job, start, end))
            n_texts += end - start
            n_tokens += cost
        for job, _, _ in chosen:
            job.runs.popleft()
            queue = self._fresh if any(job is f for f in self._fresh) else self._rotation
            queue.remove(job)
            if job.runs:
                self._rotation.append(job)
        return chosen

    def _prune(self) -> None:
        """Forget jobs whose future is done: their remaining sub-batches never reach the engine."""
        for job in [job for job in (*self._fresh, *self._rotation) if job.dropped]:
            self._forget(job, dropped=job.future.cancelled())

    def _forget(self, job: Job, *, dropped: bool = True) -> None:
        """Take ``job`` out of the queues; ``dropped``: count its waiting items as dropped (its caller went away)."""
        for queue in (self._fresh, self._rotation):
            if any(job is queued for queued in queue):
                queue.remove(job)
        count = job.remaining_inputs()
        job.runs.clear()
        observer = self._owner._observer
        if dropped and count:
            logger.debug("dropped %d %s items of a request whose caller went away", count, self._kind)
            if observer is not None:
                observer.inputs_dropped(kind=self._kind, count=count)
        self._owner._report_queue()

    def _deliver(self, batch: list[tuple[Job, int, int]], rows: Rows) -> None:
        offset = 0
        values = rows.values
        for job, start, end in batch:
            part = slice(offset, offset + end - start)
            offset += end - start
            if job.future.done():
                continue
            if job.out is None:
                job.out = np.empty((len(job.items), *values.shape[1:]), dtype=values.dtype)
            job.out[start:end] = values[part]
            job.receipts[start:end] = rows.receipts[part]
            job.missing -= end - start
            if job.missing == 0:
                job.future.set_result(Rows(job.out, job.receipts))
