"""The monitor stage: drift and quality of live traffic against the champion's training data.

`job.run_monitor` is the entry point; `capture` reads SageMaker Data Capture files, `drift`
computes Evidently's per-column verdicts on all rows, `report` renders Evidently's HTML/JSON
report on a sample, `decide` holds the decision and the loop-safety rules.
"""
