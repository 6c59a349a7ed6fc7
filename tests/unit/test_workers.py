"""The trials' worker processes: forked (ready at once, libraries imported) from a process with
one thread, loky's otherwise; one thread each even after this process used OpenMP; stopped
with their block, at once on an error."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ctloop import workers


def _in_fresh_process(script: str, timeout: float = 120) -> dict:
    """Run `script` in a new interpreter (one thread, as `ctloop train` starts) and return
    the JSON it prints last: pytest's own workers run threads, which rule forking out."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


_SEEN_BY_A_WORKER = """
import json, os, sys
from threadpoolctl import threadpool_info

def seen():
    return {"pid": os.getppid(), "pandas": "pandas" in sys.modules,
            "threads": sorted({p["num_threads"] for p in threadpool_info()})}
"""


def test_a_process_with_one_thread_forks_workers_that_start_with_its_libraries():
    out = _in_fresh_process(_SEEN_BY_A_WORKER + """
import multiprocessing, pandas
from ctloop.workers import local_workers

if __name__ == "__main__":
    with local_workers(2) as executor:
        children = multiprocessing.active_children()
        result = [executor.submit(seen).result() for _ in range(4)]
    print(json.dumps({"me": os.getpid(), "seen": result, "children": len(children),
                      "left": len(multiprocessing.active_children())}))
""")
    assert out["children"] == 2  # both forked as the block opened
    assert all(s["pid"] == out["me"] and s["pandas"] for s in out["seen"])  # no re-import
    assert all(s["threads"] == [1] for s in out["seen"])  # every pool on one thread
    assert out["left"] == 0  # stopped when the block closed


@pytest.fixture
def another_thread():
    """A second thread in this process, as a notebook's kernel or a server runs."""
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    yield
    stop.set()
    other.join()


def test_with_another_thread_running_the_workers_are_loky_s(another_thread):
    with workers.local_workers(1) as executor:
        assert executor.submit(sum, [1, 2]).result() == 3
        assert type(executor).__module__.startswith("joblib.externals.loky")


def test_a_forked_worker_fits_on_one_thread_after_this_process_used_openmp():
    """GNU OpenMP hangs a forked child that starts a team once the parent has used its pool:
    the parent here fits with two threads first, as a notebook that trained before might."""
    out = _in_fresh_process(_SEEN_BY_A_WORKER + """
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
import lightgbm, xgboost
from ctloop.workers import local_workers

X = np.random.default_rng(0).random((5000, 8))
y = (X[:, 0] > 0.5).astype(int)

def fit_all(threads):
    HistGradientBoostingClassifier(max_iter=10).fit(X, y)
    xgboost.XGBClassifier(n_estimators=10, n_jobs=threads).fit(X, y)
    lightgbm.LGBMClassifier(n_estimators=10, n_jobs=threads, verbose=-1).fit(X, y)
    return seen()

if __name__ == "__main__":
    fit_all(2)
    with local_workers(2) as executor:
        result = executor.submit(fit_all, 1).result(timeout=60)
    print(json.dumps(result))
""")
    assert out["threads"] == [1]


def test_a_block_inside_another_shares_its_workers():
    out = _in_fresh_process("""
import json
from ctloop.workers import local_workers

if __name__ == "__main__":
    with local_workers(2) as outer, local_workers(2) as inner:
        print(json.dumps({"same": outer is inner}))
""")
    assert out["same"]


def test_an_error_in_the_block_stops_a_running_task_at_once():
    out = _in_fresh_process("""
import json, multiprocessing, time
from ctloop.workers import local_workers

if __name__ == "__main__":
    started = time.perf_counter()
    try:
        with local_workers(2) as executor:
            executor.submit(time.sleep, 60)
            time.sleep(0.5)
            raise ValueError("the parent failed")
    except ValueError:
        pass
    print(json.dumps({"seconds": time.perf_counter() - started,
                      "left": len(multiprocessing.active_children())}))
""")
    assert out["seconds"] < 10 and out["left"] == 0


def test_loky_workers_are_warmed_up_and_kept_for_the_next_training(another_thread):
    """They import the fitting libraries as they start, and live on for the next training
    (a notebook's), instead of paying the imports on its clock."""
    with workers.local_workers(2) as executor:
        workers.warm_up(executor, 2)
        pids = {executor.submit(_pid_after, 0.2).result() for _ in range(4)}
    with workers.local_workers(2) as again:
        assert again is executor
        assert {again.submit(_pid_after, 0.2).result() for _ in range(4)} <= pids


def _pid_after(seconds: float) -> int:
    import os

    time.sleep(seconds)
    return os.getpid()
