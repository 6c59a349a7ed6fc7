"""Everything ctloop writes to or reads from MLflow tracking (runs, artifacts, logged models).

With `registry`, the only package that imports MLflow: stages call these functions with plain
values, so swapping the embedded SQLite store for a team server changes nothing above here.
Callers use `from ctloop import tracking` and `tracking.<name>`; the names live in one module
per job:

- `layout` — names shared by writers and readers: run-kind tags, retrain tag, artifact paths.
- `store` — the tracking URI, experiments (tagged for the MLflow UI), the git commit, and
  reading or tagging any run (`run_info`, `set_run_tags`).
- `training_runs` — the parent run of `ctloop train`, its trial runs and their pyfunc models
  (signature, bundled source, pinned requirements); finding them again.
- `artifacts` — reading back logged models, the reference/holdout frames and signatures.
- `gate_runs` — the gate's child run, its metrics and decision text, and the floors through
  MLflow's evaluate.
- `probe` — loading a logged model with plain `mlflow.pyfunc` in a fresh interpreter.
- `monitoring_runs` — one run per monitor job; recent retrains and the last job's summary.
- `project_runs` — rerunning the MLflow project to retrain, never leaving the run RUNNING.

MLflow is imported inside functions only, so importing this package costs nothing.
"""

from __future__ import annotations

from ctloop.tracking.artifacts import (
    download_model_dir,
    load_frame,
    load_holdout,
    load_model,
    load_out_of_fold,
    load_reference,
    signature_inputs,
)
from ctloop.tracking.gate_runs import evaluate_floors, gate_run, log_metrics, log_text
from ctloop.tracking.layout import (
    GATE_KIND,
    HOLDOUT_ARTIFACT,
    MODEL_DATA_DIR,
    MODEL_NAME_IN_RUN,
    MONITOR_KIND,
    REFERENCE_ARTIFACT,
    RETRAIN_LAUNCHED,
    RETRAIN_TAG,
    RUN_KIND_TAG,
    TRAINING_KIND,
    TRIAL_KIND,
)
from ctloop.tracking.monitoring_runs import (
    MonitorRun,
    last_run_summary,
    monitoring_run,
    recent_retrains,
)
from ctloop.tracking.probe import probe_in_fresh_process
from ctloop.tracking.project_runs import mark_finished, run_project
from ctloop.tracking.store import (
    DEFAULT_TRACKING_URI,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    configure,
    experiment_id,
    git_commit,
    run_info,
    set_run_tags,
    tracking_uri,
    use_experiment,
)
from ctloop.tracking.training_runs import (
    MODEL_REQUIREMENTS,
    TrainingRun,
    TrialRecord,
    input_types,
    installed_modules,
    installed_modules_known,
    latest_training_run,
    training_run,
    trial_runs,
)

__all__ = [
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "GATE_KIND",
    "HOLDOUT_ARTIFACT",
    "MODEL_DATA_DIR",
    "MODEL_NAME_IN_RUN",
    "MODEL_REQUIREMENTS",
    "MONITOR_KIND",
    "REFERENCE_ARTIFACT",
    "RETRAIN_LAUNCHED",
    "RETRAIN_TAG",
    "RUN_KIND_TAG",
    "TRAINING_KIND",
    "TRIAL_KIND",
    "MonitorRun",
    "TrainingRun",
    "TrialRecord",
    "configure",
    "download_model_dir",
    "evaluate_floors",
    "experiment_id",
    "gate_run",
    "git_commit",
    "input_types",
    "installed_modules",
    "installed_modules_known",
    "last_run_summary",
    "latest_training_run",
    "load_frame",
    "load_holdout",
    "load_model",
    "load_out_of_fold",
    "load_reference",
    "log_metrics",
    "log_text",
    "mark_finished",
    "monitoring_run",
    "probe_in_fresh_process",
    "recent_retrains",
    "run_info",
    "run_project",
    "set_run_tags",
    "signature_inputs",
    "tracking_uri",
    "training_run",
    "trial_runs",
    "use_experiment",
]
