"""The names ctloop gives things in MLflow: run-kind tags, the retrain tag, artifact paths.

Why a module of its own: the code that writes a run and the code that finds or reads it back
live in different modules (and `train`, `select`, `monitor` use some names too), so the names
sit in one place where writers and readers agree on them.
"""

from __future__ import annotations

# Where a trial's pyfunc model sits in its run, and ctloop's own folder inside the model.
MODEL_NAME_IN_RUN = "model"
MODEL_DATA_DIR = "ctloop_model"
# Frames logged with each training run: the monitor's reference and the gate's holdout.
REFERENCE_ARTIFACT = "reference/train.parquet"
HOLDOUT_ARTIFACT = "evaluation/holdout.parquet"
# Cross-validated champions only: the out-of-fold scores of every training + validation row,
# with their encoded labels (the monitor's expected level rests on these and the holdout).
OUT_OF_FOLD_ARTIFACT = "evaluation/out_of_fold.parquet"
# Every run ctloop starts carries its kind, so searches can tell them apart.
RUN_KIND_TAG = "ctloop.kind"
TRAINING_KIND = "training"
TRIAL_KIND = "trial"
GATE_KIND = "gate"
MONITOR_KIND = "monitor"
# A monitor run that launched a retraining says so (the loop-safety rules count them).
RETRAIN_TAG = "ctloop.retrain"
RETRAIN_LAUNCHED = "launched"
