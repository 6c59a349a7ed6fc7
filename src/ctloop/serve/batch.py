"""Batch scoring of a CSV or Parquet file, streamed in chunks so memory stays flat.

The output holds every input column plus the model's outputs (binary `probability` and `label`,
multiclass a probability per class and `label`, regression `prediction`; prefixed `predicted_`
when the input already has such columns), in the format its suffix names. It is written to a temp
file next to the target and renamed at the end, so a failure never leaves a partial file.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa

from ctloop.data import DataError
from ctloop.features import EncodingError
from ctloop.model import TabularModel

log = logging.getLogger(__name__)

CHUNK_ROWS = 65_536
CSV_BLOCK_BYTES = 8 << 20
SUFFIXES = (".csv", ".parquet")
Progress = Callable[[int, float], None]  # rows scored so far, fraction of the input read


def _kind(path: Path, role: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: {role} must be a .csv or .parquet file")
    return suffix


def _csv_batches(path: Path, model: TabularModel) -> Iterator[tuple[pa.RecordBatch, float]]:
    import pyarrow.csv as pcsv

    size = max(path.stat().st_size, 1)
    with open(path, "rb") as handle:
        header = handle.readline().decode("utf-8", errors="replace").rstrip("\r\n")
    columns = next(csv.reader([header]), [])
    _check_columns(path, columns, model)
    numeric = {c for c, kind in model.encoder.kinds.items() if kind == "numeric"}
    # Numeric features are read as numbers; the rest (text, booleans, dates and non-feature
    # columns) stay text, so no later block can fail type inference, the encoder parses them
    # as it does request values, and the CSV output reproduces them exactly.
    types = {c: pa.float64() if c in numeric else pa.string() for c in columns}
    handle = open(path, "rb")  # noqa: SIM115 - closed in finally; tell() drives progress
    try:
        reader = pcsv.open_csv(
            handle,
            read_options=pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=True,
                                                quoted_strings_can_be_null=False),
        )  # fmt: skip
        for batch in reader:
            yield batch, min(handle.tell() / size, 1.0)
    finally:
        handle.close()


def _parquet_batches(path: Path, model: TabularModel) -> Iterator[tuple[pa.RecordBatch, float]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    _check_columns(path, parquet.schema_arrow.names, model)
    total = max(parquet.metadata.num_rows, 1)
    done = 0
    for batch in parquet.iter_batches(batch_size=CHUNK_ROWS):
        done += batch.num_rows
        yield batch, done / total


def _check_columns(path: Path, columns: list[str], model: TabularModel) -> None:
    missing = [c for c in model.feature_columns if c not in columns]
    if missing:
        raise DataError(f"{path}: missing feature column '{missing[0]}' "
                        f"(the model takes {list(model.feature_columns)})")  # fmt: skip


def _output_names(columns: list[str], model: TabularModel) -> dict[str, str]:
    """The model's output columns, prefixed `predicted_` if the input already has one."""
    outputs = model.task.output_columns
    clash = any(name in columns for name in outputs)
    return {name: f"predicted_{name}" if clash else name for name in outputs}


def score_batch(model: TabularModel, batch: pa.RecordBatch, names: dict[str, str]) -> pa.Table:
    frame = batch.select(list(model.feature_columns)).to_pandas()
    outputs = model.task.output_frame(model.scores(frame))
    table = pa.Table.from_batches([batch])
    for name, column in outputs.items():
        values = column.to_numpy()
        array = pa.array(values, type=pa.float64()) if values.dtype.kind == "f" else pa.array(
            column.tolist())
        table = table.append_column(names[name], array)
    return table


class _Writer:
    """CSV or Parquet writer opened on the first chunk (its schema fixes the file's)."""

    def __init__(self, path: Path, suffix: str) -> None:
        self.path, self.suffix, self._writer = path, suffix, None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            if self.suffix == ".csv":
                import pyarrow.csv as pcsv

                self._writer = pcsv.CSVWriter(str(self.path), table.schema)
            else:
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(str(self.path), table.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def predict_file(model: TabularModel, source: str | Path, target: str | Path,
                 on_progress: Progress | None = None) -> int:  # fmt: skip
    """Score every row of `source` into `target`; returns the number of rows scored."""
    source, target = Path(source), Path(target)
    in_kind, out_kind = _kind(source, "--input"), _kind(target, "--output")
    if not source.is_file():
        raise DataError(f"{source}: input file not found")
    if source.resolve() == target.resolve():
        raise DataError(f"{target}: the output must not overwrite the input")
    if not target.parent.is_dir():
        raise DataError(f"{target.parent}: output folder does not exist")
    batches = _csv_batches(source, model) if in_kind == ".csv" else _parquet_batches(
        source, model)  # fmt: skip
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    writer = _Writer(tmp, out_kind)
    rows, names = 0, None
    try:
        for batch, fraction in batches:
            names = names or _output_names(batch.schema.names, model)
            writer.write(score_batch(model, batch, names))
            rows += batch.num_rows
            if on_progress:
                on_progress(rows, fraction)
        writer.close()
        if rows == 0:
            raise DataError(f"{source}: no rows to score")
        os.replace(tmp, target)
    except (pa.ArrowException, EncodingError, UnicodeDecodeError) as exc:
        raise DataError(f"{source}: {exc}") from None
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return rows
