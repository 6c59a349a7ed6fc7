"""The monitor stage: drift and quality of live traffic against the champion's training data.

`job.run_monitor` is the entry point and orchestrates one job; it returns a `result.MonitorResult`.
Its steps, one module each: `reference` (the champion and its training/holdout rows), `current`
(the window of captured traffic or a file), `frames` (frames in the champion's terms), `drift`
(Evidently's per-column verdicts on all rows), `quality` (the champion's predictions and its
quality on labelled rows), `decide` (the decision and the loop-safety rules), `report`
(Evidently's HTML/JSON report on a sample), `retrain` (the project run on drift).
Captured traffic: `capture.read_capture` reads SageMaker Data Capture files, built from
`capture_sources` (files in a window), `capture_decode` (lines and uniform files),
`capture_reader` (rows into a frame) and `capture_sample` (seeded sampling of lines);
`ground_truth` reads and joins Model Monitor labels.
Every step asks the champion's `Task` (binary, multiclass, regression) what differs: how served
outputs read back (`scores_from_records`), how labels encode (`encode_known`), its metrics and
which are lower-is-better, the prediction-drift signal (`drift_signal`) and Evidently's preset.
"""
