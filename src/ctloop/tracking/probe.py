"""The fresh-process probe: load a logged model with plain `mlflow.pyfunc` in a new interpreter.

Why a module of its own: it is the infrastructure check of the gate — what `mlflow models
serve` or another team's process will do with the model, free of anything this process has
already imported — and it runs a small script of its own (`_PROBE`) in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

_PROBE = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import mlflow
uri = sys.argv[1]
model = mlflow.pyfunc.load_model(uri)
example = model.input_example
if example is None:
    raise SystemExit("the model has no input example")
out = model.predict(example)
row = example.head(1)
times = []
for _ in range(30):
    start = time.perf_counter(); model.predict(row); times.append(time.perf_counter() - start)
times.sort()
cols = list(out.columns)
print(json.dumps({"rows": len(out), "columns": cols, "latency_ms": 1000 * times[len(times) // 2]}))
"""


def probe_in_fresh_process(model_uri: str, timeout_s: float = 300.0) -> dict[str, Any]:
    """Load the model with mlflow.pyfunc in a new interpreter and score its input example.

    This is the infrastructure check: what `mlflow models serve` or another team's process
    will do with the model. Returns {"ok", "error", "rows", "latency_ms", "seconds"}.
    """
    import json
    import sys

    start = time.perf_counter()
    env = {**os.environ, "MLFLOW_TRACKING_URI": _current_tracking_uri()}
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, model_uri], capture_output=True,
                              text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout_s:.0f} s", "seconds": timeout_s}
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "error": tail[:500], "seconds": seconds}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"ok": True, "error": "", "seconds": seconds, **result}


def _current_tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()
