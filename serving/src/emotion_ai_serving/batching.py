"""Optional server-side batching: concurrent requests for the same signature are concatenated
along dim 0, run as one forward pass and split again (BatchingSession semantics)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from .config import BatchingSettings
from .errors import UNAVAILABLE, ServingError, invalid_argument

log = logging.getLogger(__name__)

RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    rows: int
    future: Future = field(default_factory=Future)

    def key(self) -> tuple:
        return tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in self.inputs.items()))


class BatchQueue:
    """One queue per (servable, signature, output set), served by `num_batch_threads` threads."""

    def __init__(self, run: RunFn, settings: BatchingSettings, name: str) -> None:
        self._run = run
        self._settings = settings
        self._queue: queue.Queue[_Task | None] = queue.Queue(
            maxsize=max(1, settings.max_enqueued_batches) * max(1, settings.max_batch_size)
        )
        self._carry: list[_Task] = []
        self._carry_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._worker, name=f"batch-{name}-{i}", daemon=True)
            for i in range(max(1, settings.num_batch_threads))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, inputs: dict[str, np.ndarray]) -> Future:
        rows = {v.shape[0] if v.ndim else -1 for v in inputs.values()}
        if len(rows) != 1 or -1 in rows:
            future: Future = Future()  # not batchable: run alone on the caller's thread
            future.set_result(self._run(inputs))
            return future
        task = _Task(inputs, rows.pop())
        if task.rows > self._settings.max_batch_size:
            raise invalid_argument(
                f"Task size {task.rows} is larger than maximum input batch size "
                f"{self._settings.max_batch_size}"
            )
        try:
            self._queue.put_nowait(task)
        except queue.Full as exc:
            raise ServingError(
                UNAVAILABLE, "The batch scheduling queue to which this task was submitted is full"
            ) from exc
        return task.future

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)

    def _next(self, timeout: float | None) -> _Task | None:
        with self._carry_lock:
            if self._carry:
                return self._carry.pop(0)
        return (
            self._queue.get(timeout=timeout)
            if timeout is None or timeout > 0
            else (self._queue.get_nowait())
        )

    def _worker(self) -> None:
        limit = self._settings.max_batch_size
        wait = self._settings.batch_timeout_micros / 1e6
        while True:
            first = self._next(None)
            if first is None:
                return
            batch, rows = [first], first.rows
            deadline = time.monotonic() + wait
            while rows < limit:
                try:
                    task = self._next(max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if task is None:
                    self._queue.put(None)
                    break
                if task.key() != first.key() or rows + task.rows > limit:
                    with self._carry_lock:
                        self._carry.append(task)
                    break
                batch.append(task)
                rows += task.rows
            self._execute(batch, rows)

    def _padded_size(self, rows: int) -> int:
        for size in self._settings.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows

    def _execute(self, batch: list[_Task], rows: int) -> None:
        try:
            if len(batch) == 1 and not self._settings.allowed_batch_sizes:
                outputs = self._run(batch[0].inputs)
            else:
                merged = {k: np.concatenate([t.inputs[k] for t in batch]) for k in batch[0].inputs}
                padded = self._padded_size(rows)
                if padded > rows:
                    merged = {
                        k: np.concatenate([v, np.repeat(v[-1:], padded - rows, axis=0)])
                        for k, v in merged.items()
                    }
                outputs = self._run(merged)
                if any(v.ndim == 0 or v.shape[0] != padded for v in outputs.values()):
                    raise ServingError(
                        "INTERNAL", "Batched output does not have the batch's first dimension"
                    )
            start = 0
            for task in batch:
                part = (
                    outputs
                    if len(batch) == 1 and not self._settings.allowed_batch_sizes
                    else {k: v[start : start + task.rows] for k, v in outputs.items()}
                )
                start += task.rows
                task.future.set_result(part)
            log.debug("batch done", extra={"tasks": len(batch), "rows": rows})
        except Exception as exc:
            for task in batch:
                if not task.future.done():
                    task.future.set_exception(exc)
