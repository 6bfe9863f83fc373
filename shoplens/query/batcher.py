"""A micro-batcher: calls made at about the same time from many threads become one call on a batch.

Encoding one photo at a time leaves most of a CPU's vector units idle and pays the runtime's per-call
overhead for every shopper; when a crowd searches at once, the photos that arrive within a few
milliseconds of each other are encoded together (up to a bounded batch). A lone shopper waits at most
the gathering window. The queue is bounded too: when it is full, `submit` refuses at once with Busy
instead of letting waits grow without end.

One MicroBatcher per app (shoplens.web.shop.Shop holds it); its worker thread starts on the first call.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Callable, Generic, Sequence, TypeVar

from shoplens.errors import UserError

T = TypeVar("T")
R = TypeVar("R")

WINDOW_SECONDS = 0.004  # how long the first call of a batch waits for others to join it
MAX_BATCH = 16  # items per call: bounds the batch's memory and the wait of the last one in it
MAX_PENDING = 256  # calls waiting for the worker at most; beyond that, Busy
IDLE_SECONDS = 30.0  # the worker thread ends after this long without work (the next call starts another)


class Busy(UserError):
    """Too many searches are waiting already; the caller should try again in a moment."""

    def __init__(self, message: str = "busy, try again in a moment"):
        super().__init__(message)


class MicroBatcher(Generic[T, R]):
    """Runs `run_batch(items) -> results` (one result per item, in order) over items submitted from many threads.

    Items are taken in the order they were submitted. When `run_batch` raises on a batch of several items, each
    item is run alone, so one bad item fails only its own call.
    """

    def __init__(self, run_batch: Callable[[list[T]], Sequence[R]], max_batch: int = MAX_BATCH,
                 window: float = WINDOW_SECONDS, max_pending: int = MAX_PENDING, name: str = "batcher"):
        if max_batch < 1 or max_pending < 1:
            raise ValueError("max_batch and max_pending must be at least 1")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.window = window
        self.max_pending = max_pending
        self.name = name
        self._queue: deque[tuple[T, Future]] = deque()
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # calls of run_batch so far (read by tests and the benchmark)
        self.items = 0

    def submit(self, item: T) -> Future:
        """Queue `item`; its Future gets the result (or the exception) of its part of a batch. Busy when full."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            if len(self._queue) >= self.max_pending:
                raise Busy()
            self._queue.append((item, future))
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._worker.start()
            self._cond.notify()
        return future

    def __call__(self, item: T, timeout: float | None = None) -> R:
        """The result for one item, waiting for its batch (Busy at once when the queue is full)."""
        return self.submit(item).result(timeout)

    def pending(self) -> int:
        """Items waiting for the worker."""
        with self._cond:
            return len(self._queue)

    def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            worker = self._worker
        if worker is not None:
            worker.join(timeout=30)

    def _take(self) -> list[tuple[T, Future]] | None:
        # Wait for a first item, then up to `window` for the batch to fill; None when closed and drained.
        with self._cond:
            while not self._queue:
                if self._closed or not self._cond.wait(IDLE_SECONDS) and not self._queue:
                    self._worker = None  # submit() starts a new one: no idle thread per Shop left behind
                    return None
            deadline = time.monotonic() + self.window
            while len(self._queue) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            count = min(self.max_batch, len(self._queue))
            return [self._queue.popleft() for _ in range(count)]

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
            if live:
                self._answer(live)

    def _answer(self, batch: list[tuple[T, Future]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = list(self.run_batch([item for item, _ in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} items")
        except BaseException as exc:  # noqa: BLE001 - handed to the callers
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            for one in batch:  # find the bad item: each alone, so the others still get their results
                self._answer([one])
            return
        for (_, future), result in zip(batch, results):
            future.set_result(result)
