"""serve stage: the local scoring server, batch scoring, and the local deployment.

`server` runs the MLflow-protocol scoring server that follows the champion alias, `batch`
scores CSV/Parquet files in chunks, `local` starts or reloads a background server. Submodules
are imported by `loop` when used, so importing this package costs nothing.
"""
