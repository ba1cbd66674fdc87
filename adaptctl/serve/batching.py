"""The queue between the request handlers and the model: one worker thread takes the first job
waiting, gathers the jobs that arrive within `max_wait` seconds (or until `batch_size` rows are
waiting) and runs them as one batch.  Under no load a request waits at most `max_wait` for company;
under load the queue fills while a batch runs, so the next batch is full at once and throughput grows
with the number of clients.

One thread runs the model: a transformers model is not safe to call from two threads, and one
batched call uses the cores better than two interleaved ones.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Callable

from adaptctl.core import console
from adaptctl.core.redact import redact

_STOP = object()


class BatchQueue:
    def __init__(self, run_batch: Callable[[list], None], batch_size: int, max_wait: float,
                 worker_context: Callable | None = None):
        """run_batch(jobs) runs on the worker thread; worker_context() is entered there for its whole life
        (thread-local state such as torch's no_grad and autocast)."""
        self._run_batch, self.batch_size, self.max_wait = run_batch, batch_size, max_wait
        self._context = worker_context
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="adaptctl-serve-worker", daemon=True)
        self.stats = {"batches": 0, "requests": 0, "rows": 0, "largest_batch": 0, "busy_seconds": 0.0}

    def start(self):
        self._thread.start()

    def submit(self, job):
        self._queue.put(job)

    def waiting(self) -> int:
        return self._queue.qsize()

    def stop(self, timeout: float | None = None):
        """After the jobs already queued: the server has stopped taking requests when this is called."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # --------------------------------------------------------------- the worker thread
    def _work(self):
        import contextlib

        with self._context() if self._context else contextlib.nullcontext():
            while (jobs := self._gather()) is not None:
                self._run(jobs)

    def _gather(self) -> list | None:
        first = self._queue.get()
        if first is _STOP:
            return None
        jobs, rows = [first], first.rows
        deadline = time.monotonic() + self.max_wait
        while rows < self.batch_size and (left := deadline - time.monotonic()) > 0:
            try:
                job = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if job is _STOP:
                self._queue.put(_STOP)  # stop after this batch
                break
            jobs.append(job)
            rows += job.rows
        return jobs

    def _run(self, jobs: list):
        live = [job for job in jobs if not job.cancelled.is_set()]
        if not live:
            return
        start = time.monotonic()
        try:
            self._run_batch(live)
        except Exception as exc:  # noqa: BLE001 (the model failed on this batch: its requests get a 500, the server goes on)
            console.error(redact(f"serve: a batch of {len(live)} requests failed:\n{traceback.format_exc()}"))
            for job in live:
                job.report_failure(exc)
        seconds = time.monotonic() - start
        rows = sum(job.rows for job in live)
        self.stats.update(batches=self.stats["batches"] + 1, requests=self.stats["requests"] + len(live),
                          rows=self.stats["rows"] + rows, largest_batch=max(self.stats["largest_batch"], rows),
                          busy_seconds=round(self.stats["busy_seconds"] + seconds, 3))
        console.info(f"serve: batch {self.stats['batches']}: {len(live)} request{'s' * (len(live) != 1)}, "
                     f"{rows} row{'s' * (rows != 1)}, {seconds:.2f} s")
