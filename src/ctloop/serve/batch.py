"""Batch scoring of a CSV (compressed or not) or Parquet file, streamed in chunks so memory
stays flat.

The output holds every input column plus the model's outputs (binary `probability` and `label`,
multiclass a probability per class and `label`, regression `prediction`; prefixed `predicted_`
when the input already has such columns), in the format its suffix names. It is written to a temp
file next to the target and renamed at the end, so a failure never leaves a partial file.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import logging
import lzma
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from ctloop.config import TABLE_SUFFIXES, table_format
from ctloop.data import UNREADABLE, DataError
from ctloop.features import EncodingError
from ctloop.model import TabularModel

log = logging.getLogger(__name__)

CHUNK_ROWS = 65_536
CSV_BLOCK_BYTES = 8 << 20
OUTPUT_SUFFIXES = (".csv", ".parquet")
DECOMPRESSORS: dict[str, Callable[[BinaryIO], BinaryIO]] = {
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw), ".bz2": bz2.BZ2File, ".xz": lzma.LZMAFile}
Progress = Callable[[int, float], None]  # rows scored so far, fraction of the input read


def _input_kind(path: Path) -> str:
    kind = table_format(path)
    if kind is None:
        raise DataError(f"{path}: --input must be a {', '.join(TABLE_SUFFIXES)} file")
    return kind


def _output_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise DataError(f"{path}: --output must be a .csv or .parquet file")
    return suffix


@contextlib.contextmanager
def _csv_bytes(path: Path) -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """The CSV's bytes, decompressed as the file name says, and the file under them: how far
    it has been read is the progress."""
    name = path.name.lower()
    with open(path, "rb") as raw:
        if name.endswith(".zip"):
            archive = zipfile.ZipFile(raw)
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) != 1:
                raise DataError(f"{path}: a zip must hold one CSV file, this one holds "
                                f"{len(members)}")
            stream: BinaryIO = archive.open(members[0])  # type: ignore[assignment]
        else:
            decompress = DECOMPRESSORS.get(Path(name).suffix)
            stream = decompress(raw) if decompress else raw
        yield stream, raw


def _csv_batches(path: Path, model: TabularModel) -> Iterator[tuple[pa.RecordBatch, float]]:
    import pyarrow.csv as pcsv

    size = max(path.stat().st_size, 1)
    try:
        with _csv_bytes(path) as (stream, _):
            header = stream.readline().decode("utf-8", errors="replace").rstrip("\r\n")
        columns = next(csv.reader([header]), [])
        _check_columns(path, columns, model)
        numeric = {c for c, kind in model.encoder.kinds.items() if kind == "numeric"}
        # Numeric features are read as numbers; the rest (text, booleans, dates and
        # non-feature columns) stay text, so no later block can fail type inference, the
        # encoder parses them as it does request values, and the CSV output reproduces them.
        types = {c: pa.float64() if c in numeric else pa.string() for c in columns}
        with _csv_bytes(path) as (stream, raw):
            reader = pcsv.open_csv(
                stream,
                read_options=pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                convert_options=pcsv.ConvertOptions(column_types=types,
                                                    strings_can_be_null=True,
                                                    quoted_strings_can_be_null=False),
            )  # fmt: skip
            for batch in reader:
                yield batch, min(raw.tell() / size, 1.0)
    except UNREADABLE as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None


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
    in_kind, out_kind = _input_kind(source), _output_kind(target)
    if not source.is_file():
        raise DataError(f"{source}: input file not found")
    if source.resolve() == target.resolve():
        raise DataError(f"{target}: the output must not overwrite the input")
    if not target.parent.is_dir():
        raise DataError(f"{target.parent}: output folder does not exist")
    batches = _csv_batches(source, model) if in_kind == "csv" else _parquet_batches(
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
