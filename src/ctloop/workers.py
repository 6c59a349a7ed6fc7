"""This machine's processes for the trials, refits and plots: forked from this process when
no other thread runs in it, else spawned by loky.

A forked worker is ready in milliseconds with every library this process has imported. A
spawned one starts a new interpreter and imports pandas, scikit-learn, XGBoost and LightGBM
again, 1.5 s of CPU each, while the search waits: that is on the clock of every `ctloop
train` from the command line and every retrain the monitor launches. Forking is safe only
when no other thread can be holding a lock the child would need (its copy would stay locked
for good), so with a second thread running (a notebook's kernel, a server) the workers are
loky's, kept for `IDLE_SECONDS` after their last task for the next training.

GNU OpenMP (XGBoost, LightGBM, scikit-learn) is not fork-safe once this process has used its
thread pool: a child that starts a team of threads waits forever for threads that were not
copied. A parallel region on one thread needs no team, so a forked worker limits every
thread pool to one thread before it runs anything; the trials ask for one thread anyway.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import threading
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

from threadpoolctl import ThreadpoolController

log = logging.getLogger(__name__)
IDLE_SECONDS = 300  # loky workers' life after their last task (joblib's default; loky's is 10)

_FORKED: dict[int, ProcessPoolExecutor] = {}  # by thread: its open `local_workers` block's
_THREADPOOLS: list[ThreadpoolController] = []


@contextlib.contextmanager
def local_workers(count: int) -> Iterator[Executor]:
    """`count` worker processes for the block: forked as it opens when no other thread runs
    (and stopped as it closes, killed if it closes on an error), else loky's reusable ones.
    A block opened inside another one (in the same thread) gets the outer block's workers,
    so a caller that starts a thread (the command line's progress bar) opens the block first."""
    thread = threading.get_ident()
    if thread in _FORKED:
        yield _FORKED[thread]
        return
    if threading.active_count() > 1 or "fork" not in multiprocessing.get_all_start_methods():
        from joblib.externals.loky import get_reusable_executor

        log.info("%d loky worker processes (not forked: %d threads run here)", count,
                 threading.active_count())
        yield get_reusable_executor(max_workers=count, timeout=IDLE_SECONDS)
        return
    executor = ProcessPoolExecutor(count, multiprocessing.get_context("fork"),
                                   initializer=_start_forked_worker)
    before = set(multiprocessing.active_children())
    gc.freeze()  # this process's objects stay out of the workers' collections: shared pages
    try:
        executor.submit(int)  # under fork, the first task forks every worker at once
    finally:
        gc.unfreeze()
    forked = set(multiprocessing.active_children()) - before
    log.info("%d worker processes forked from this one", len(forked))
    _FORKED[thread] = executor
    try:
        yield executor
    except BaseException:
        for process in forked:  # a trial still running would hold up the error for its length
            process.kill()
        raise
    finally:
        del _FORKED[thread]
        executor.shutdown(wait=True, cancel_futures=True)


def _start_forked_worker() -> None:
    """Limit the thread pools for the worker's life (see the module docstring)."""
    _import_fitting_libraries()
    ThreadpoolController().limit(limits=1)


def _import_fitting_libraries() -> None:
    import lightgbm  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import xgboost  # noqa: F401


def warm_up(executor: Executor, count: int) -> None:
    """Have loky's workers import the fitting libraries now (seconds each), while this process
    loads the data, rather than on the search's clock; forked ones have them already."""
    if executor not in _FORKED.values():
        for _ in range(count):
            executor.submit(_import_fitting_libraries)


def one_thread() -> Any:
    """Limit this worker's thread pools (OpenMP, BLAS) to one thread while the block runs,
    with a controller made once per process: `threadpool_limits` scans every loaded library
    on each call (5 ms a trial)."""
    if not _THREADPOOLS:
        _import_fitting_libraries()  # their OpenMP runtimes must be loaded to be seen
        _THREADPOOLS.append(ThreadpoolController())
    return _THREADPOOLS[0].limit(limits=1)
