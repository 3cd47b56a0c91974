"""Where the heavy loops run: in this process, or on a Dask cluster.

The two loops that grow with the area mapped (tiles of the probability maps) and with the
samples (batches of occlusion) are written once, as a function applied to a list of
small tasks. A :class:`Session` runs them:

- **local** (``scheduler=None``, the default): a thread pool in this process, one task
  per core, each task with one torch thread (torch and GDAL release the GIL). No start-up
  cost, no copies, and the main thread writes results while the tasks compute. On a
  2-core machine this was the fastest choice measured (``docs/scale.md``): independent
  single-threaded tasks beat one task with two torch threads (which wait on each other,
  badly so when other jobs hold the cores), and a process-based ``LocalCluster`` costs
  seconds to start and a Python-with-torch (~1 GiB) per worker.
- **Dask** (``scheduler="tcp://host:8786"``, or ``workers=N`` for a ``LocalCluster`` of
  N processes): a ``distributed.Client``. Shared state (the model's weights, as plain
  arrays) is scattered to the workers once; each task names its inputs (a raster path and
  a window, or a batch of patches), so workers read imagery themselves.

Either way :meth:`Session.map` keeps a bounded number of tasks in flight (memory stays
bounded however many tasks there are) and yields results in task order, so outputs are
written in the same order, hence byte for byte the same files, whatever ran them.

This is the one module that knows about Dask; ``distributed`` is imported only when a
cluster is asked for.
"""

from __future__ import annotations

import importlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from soilsource.errors import InputError

__all__ = [
    "Session",
    "cache_dir",
    "check_scheduler",
    "compute_session",
    "session_or_local",
    "set_torch_threads",
    "task_threads",
]

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Session:
    """Runs tasks locally or on a Dask cluster; made by :func:`compute_session`.

    Attributes
    ----------
    client:
        The ``distributed.Client``, or None for the local thread pool.
    slots:
        Tasks that can compute at the same time (threads of the pool, or of all workers).
    torch_threads:
        Torch threads per task on each Dask worker (by worker address): the cores of its
        host shared among the task slots on that host; or, key ``"local"``, torch's
        threads in this process shared among the local pool's threads.
    max_in_flight:
        Tasks submitted but not yet consumed; bounds memory.
    """

    client: Any
    slots: int
    torch_threads: dict[str, int]
    max_in_flight: int
    _pool: ThreadPoolExecutor | None = None

    @property
    def is_local(self) -> bool:
        """True when tasks run in this process."""
        return self.client is None

    def describe(self) -> str:
        """One line for logs: where the tasks run."""
        if self.is_local:
            threads = self.torch_threads["local"]
            return f"local: {self.slots} task(s) at a time, {threads} torch thread(s) each"
        return f"dask {self.client.scheduler.address}: {self.slots} worker threads"

    def map(
        self,
        fn: Callable[..., R],
        tasks: Iterable[T],
        *,
        shared: Any = None,
    ) -> Iterator[R]:
        """``fn(shared, task)`` for each task, yielded in task order.

        At most :attr:`max_in_flight` tasks are submitted and unconsumed at once; the
        next task is submitted as the oldest result is taken. ``shared`` travels to each
        Dask worker once (scattered), not once per task. ``fn`` must be a module-level
        function (Dask pickles it by reference); torch's thread count is set for it
        (:attr:`torch_threads`) before it runs.

        An :class:`~soilsource.errors.InputError` raised by a task is raised here, as is.
        Closing the iterator early cancels the tasks still pending.
        """
        submit = (self._local_submit if self.is_local else self._dask_submit)(fn, shared)
        pending: deque[Any] = deque()
        try:
            for task in tasks:
                pending.append(submit(task))
                if len(pending) >= self.max_in_flight:
                    yield _unwrap(pending.popleft().result())
            while pending:
                yield _unwrap(pending.popleft().result())
        finally:
            for future in pending:
                future.cancel()

    def _local_submit(self, fn: Callable[..., R], shared: Any) -> Callable[[Any], Future]:
        pool = self._pool
        assert pool is not None
        threads = self.torch_threads["local"]
        return lambda task: pool.submit(_guarded, fn, shared, task, threads)

    def _dask_submit(self, fn: Callable[..., R], shared: Any) -> Callable[[Any], Any]:
        # In a list, so that a dict or list is scattered as one object.
        [shared_future] = self.client.scatter([shared], broadcast=True, hash=False)
        threads = dict(self.torch_threads)
        return lambda task: self.client.submit(
            _guarded_on_worker, fn, shared_future, task, threads, pure=False
        )


@contextmanager
def compute_session(
    scheduler: str | None = None,
    *,
    workers: int | None = None,
    threads_per_worker: int = 1,
    local_threads: int | None = None,
    max_in_flight: int | None = None,
    timeout: str = "20s",
    preload: Sequence[str] = (),
) -> Iterator[Session]:
    """A :class:`Session` for the duration of a ``with`` block.

    Parameters
    ----------
    scheduler:
        Address of a running Dask scheduler (``compute.scheduler``, ``--scheduler``).
        None: local, unless ``workers`` is given.
    workers:
        Start a ``LocalCluster`` of this many worker processes (benchmarks, tests, or a
        big machine); ignored when ``scheduler`` is given.
    threads_per_worker:
        Threads of each ``LocalCluster`` worker.
    local_threads:
        Tasks computed at once by the local thread pool; default torch's thread count
        (the cores), each task then with one torch thread.
    max_in_flight:
        Tasks submitted and not yet consumed; default twice the slots (at least 2), so
        every slot has its next task waiting while the main thread writes.
    timeout:
        How long to try to reach ``scheduler``.
    preload:
        Modules of the tasks to come, imported by every Dask worker when the session starts
        (seconds per worker, paid once, not inside the first tasks); the local pool ignores it.

    Raises
    ------
    InputError
        ``scheduler`` cannot be reached (the key ``compute.scheduler`` is named).

    Examples
    --------
    >>> with compute_session() as session:
    ...     list(session.map(_add_shared, [1, 2, 3], shared=10))
    [11, 12, 13]
    """
    if scheduler is not None or workers is not None:
        from distributed import Client, LocalCluster

        if scheduler is not None:
            try:
                client = Client(scheduler, timeout=timeout)
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError(
                    "compute.scheduler", repr(scheduler), f"cannot reach the scheduler: {exc}"
                ) from None
            cluster = None
        else:
            if workers is None or workers < 1 or threads_per_worker < 1:
                raise ValueError("workers and threads_per_worker must be >= 1")
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=threads_per_worker,
                processes=True,
                dashboard_address=None,
            )
            client = Client(cluster)
        try:
            # Every worker imports torch and soilsource now, not inside the first tasks
            # (seconds per worker); a worker without soilsource fails here, plainly.
            client.run(_import_modules, tuple(preload))
            per_worker = _worker_torch_threads(client)
            slots = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
            yield Session(client, slots, per_worker, max_in_flight or max(2, 2 * slots))
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
        return
    # Torch's threads as the caller set them (all cores by default), shared among the tasks.
    threads = torch.get_num_threads()
    local_threads = threads if local_threads is None else local_threads
    if local_threads < 1:
        raise ValueError(f"local_threads must be >= 1, got {local_threads}")
    try:
        with ThreadPoolExecutor(local_threads, thread_name_prefix="soilsource") as pool:
            yield Session(
                None,
                local_threads,
                {"local": max(1, threads // local_threads)},
                max_in_flight or max(2, 2 * local_threads),
                pool,
            )
    finally:
        set_torch_threads(threads)


def check_scheduler(scheduler: str, *, timeout: str = "20s") -> None:
    """Connect to a Dask scheduler and have its workers import soilsource, then disconnect.

    A run calls this before training, so a wrong address or a cluster without soilsource
    is reported at once, not after the training it would otherwise wait for.

    Raises
    ------
    InputError
        The scheduler cannot be reached (names ``compute.scheduler``).
    """
    with compute_session(scheduler, timeout=timeout):
        pass


def session_or_local(session: Session | None) -> AbstractContextManager[Session]:
    """The caller's session, or a local one opened and closed around the ``with`` block."""
    return nullcontext(session) if session is not None else compute_session()


def _import_modules(names: tuple[str, ...]) -> None:
    """Import the task modules ``names`` (run on each worker when a session starts).

    Unpickling this function imports this module, hence torch and soilsource, already; the
    caller names the modules of its tasks, so this bottom layer need not know them.
    """
    for name in names:
        importlib.import_module(name)


def _worker_torch_threads(client: Any) -> dict[str, int]:
    """Torch threads per task on each worker: its host's cores over the host's task slots."""
    workers = client.scheduler_info()["workers"]
    cores = client.run(os.cpu_count)
    slots_on_host: dict[str, int] = {}
    for info in workers.values():
        slots_on_host[info["host"]] = slots_on_host.get(info["host"], 0) + info["nthreads"]
    return {
        address: max(1, (cores.get(address) or 1) // slots_on_host[info["host"]])
        for address, info in workers.items()
    }


def task_threads(torch_threads: dict[str, int]) -> int:
    """The torch thread count for the task running here (in a Dask worker or locally)."""
    if "local" in torch_threads:
        return torch_threads["local"]
    from distributed import get_worker

    return torch_threads.get(get_worker().address, 1)


def set_torch_threads(count: int) -> None:
    """Set torch's intra-op threads, if different (setting them is not free)."""
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


def _guarded(fn: Callable[..., R], shared: Any, task: Any, threads: int) -> Any:
    """Run a task; an InputError comes back as plain fields (it does not pickle as is)."""
    set_torch_threads(threads)
    try:
        return ("ok", fn(shared, task))
    except InputError as exc:
        return ("input_error", (exc.source, exc.where, exc.message))


def _guarded_on_worker(
    fn: Callable[..., R], shared: Any, task: Any, torch_threads: dict[str, int]
) -> Any:
    return _guarded(fn, shared, task, task_threads(torch_threads))


def _unwrap(result: tuple[str, Any]) -> Any:
    kind, value = result
    if kind == "input_error":
        raise InputError(*value)
    return value


def _add_shared(shared: int, task: int) -> int:
    """A trivial task (for the docstring example and tests)."""
    return shared + task


def cache_dir() -> Path:
    """Where derived inputs are kept between runs (pretrained trunks, context bands):
    ``$SOILSOURCE_CACHE``, else ``$XDG_CACHE_HOME/soilsource`` (default
    ``~/.cache/soilsource``). Entries are named by fingerprints of what they were made
    from; deleting the folder is always safe (they are made again).
    """
    explicit = os.environ.get("SOILSOURCE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "soilsource"
