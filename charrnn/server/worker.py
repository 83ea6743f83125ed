"""One thread that runs every generation, a chunk of each in turn.

The native kernel is not safe to call from two threads at once, and a request must not hold the
rest back for its whole length. So all kernel work happens here, on one thread: each turn takes
the next job, advances its generator by one chunk (about 20 ms of work, see
``sampling.engine.generate_chunks``) and puts the result on the job's asyncio queue; the job
then goes to the back of the line. A new job goes to the front, so its first token (prompt fed,
one token drawn) waits for at most one chunk of another.

The generations of one model step together: they hold rows of one multi-stream kernel
(``sampling.shared.SharedSteps``), and a turn of one runs kernel steps that advance them all, so
the next ones find their tokens waiting. Each row draws with its own request's sampler, so that
changes no text. Where the kernel cannot share steps (the torch path, all rows taken), a
generation keeps its state in a kernel of its own and they simply take turns.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

_END = object()


class Busy(Exception):
    """As many jobs as the limit allows are in progress."""


class Job:
    """A generator run on the worker; iterate it with ``async for`` on the event loop. Leaving
    the loop early (a client that went away) ``cancel``s it, and the worker closes it."""

    def __init__(self, start: Callable[[], Iterator[Any]], loop: asyncio.AbstractEventLoop):
        self.start, self.loop = start, loop
        self.items: asyncio.Queue = asyncio.Queue()
        self.it: Iterator[Any] | None = None
        self.cancelled = False

    def put(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.items.put_nowait, item)
        except RuntimeError:  # the event loop is gone: nobody will read this job
            self.cancelled = True

    def cancel(self) -> None:
        self.cancelled = True

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            while True:
                item = await self.items.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.cancel()


class Worker:
    """Runs jobs on one daemon thread, a chunk of each in turn; at most ``max_jobs`` at once."""

    def __init__(self, max_jobs: int = 64):
        self.max_jobs = max_jobs
        self._jobs: deque[Job] = deque()
        self._live = 0
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def live(self) -> int:
        """Jobs submitted and not yet ended (a cancelled one ends at its next turn)."""
        return self._live

    def submit(self, start: Callable[[], Iterator[Any]]) -> Job:
        """A job that runs ``start()`` on the worker and yields what the iterator it returns
        yields; an exception (raised by ``start`` or the iterator) comes out of the ``async for``.
        Raises Busy when ``max_jobs`` are in progress. Call from the event loop."""
        job = Job(start, asyncio.get_running_loop())
        with self._cv:
            if self._closed:
                raise Busy("the server is shutting down")
            if self._live >= self.max_jobs:
                raise Busy(f"{self._live} generations are in progress, the server's limit (--max-jobs)")
            self._live += 1
            self._jobs.appendleft(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="charrnn-worker", daemon=True)
                self._thread.start()
            self._cv.notify()
        return job

    async def call(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run on the worker (between two chunks of the generations in progress)."""
        async for result in self.submit(lambda: iter([fn()])):
            return result

    def close(self) -> None:
        """Stop the thread after the chunk in progress; the jobs still queued end with Busy."""
        with self._cv:
            self._closed = True
            for job in self._jobs:
                job.put(Busy("the server is shutting down"))
            self._jobs.clear()
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                job = self._jobs.popleft()
            if self._turn(job):
                with self._cv:
                    self._jobs.append(job)
            else:
                with self._cv:
                    self._live -= 1

    @staticmethod
    def _turn(job: Job) -> bool:
        """One chunk of ``job``; False once it has ended (finished, failed or cancelled)."""
        try:
            if job.cancelled:
                if job.it is not None and hasattr(job.it, "close"):
                    job.it.close()  # gives its kernel back
                return False
            if job.it is None:
                job.it = iter(job.start())
            item = next(job.it)
        except StopIteration:
            job.put(_END)
            return False
        except Exception as e:  # the request's failure, reported to it; the worker goes on
            job.put(e)
            return False
        job.put(item)
        return True
