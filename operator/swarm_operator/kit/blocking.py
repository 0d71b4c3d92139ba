"""The one way a blocking call leaves the event loop: a bounded thread pool shared by the whole operator.

The Kubernetes client (urllib3), Ray's GcsClient and the reflectors' long watch reads all block. Each goes
through one `Blocking`: calls awaited by a turn (`await blocking(fn, *args)`), reads with their own deadline
(`submit`, the Ray state pool), and long-running jobs (`submit`, the reflectors). One pool means one bound on
threads, and one place to look for where a turn waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Blocking:
    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="blocking")

    async def __call__(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` on the pool and wait for it without holding up the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
        """Start `fn` on the pool; the caller decides how long to wait (a read with a deadline, a watch)."""
        return self.executor.submit(fn, *args, **kwargs)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
