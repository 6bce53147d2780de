"""Raw per-request samples, format ``requests/1.1`` (see docs/formats.md).

Load processes write them with ``ChunkWriter``: rows are buffered and about once a second a
complete Parquet file ``requests/part-<worker>-<seq>.parquet`` appears (written under a hidden
temporary name, then renamed, so every ``part-*`` file is whole). When the run ends ``compact``
merges the chunks into ``requests.parquet`` (also through a rename) and removes ``requests/``.
``read_requests`` reads whichever is there.

Strings that repeat (scenario, endpoint, phase, name, error class, SQLSTATE, message) are
dictionary-encoded and the files zstd-compressed: a million rows stay a few megabytes and load
in well under a second.

Version 1.1 added the column ``repeat`` (the ``--repeat`` pass a row belongs to). Readers take
any ``requests/1.x`` file: a file without ``repeat`` (``requests/1``) reads as repeat 1, so old
run directories and a mix of old and new chunks read as one table of the current schema.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lab.errors import ReportError

FORMAT = "requests/1.1"
FORMAT_KIND, FORMAT_MAJOR = "requests", "1"
FORMAT_KEY = b"pooler-lab.format"
FILE = "requests.parquet"
CHUNK_DIR = "requests"
CHUNK_GLOB = "part-*.parquet"
COMPRESSION = "zstd"

_DICT = pa.dictionary(pa.int32(), pa.string())
SCHEMA = pa.schema(
    [
        ("scenario", _DICT),
        ("endpoint", _DICT),
        ("phase", _DICT),
        ("name", _DICT),
        ("worker", pa.int16()),
        ("user", pa.int32()),
        ("intended_start", pa.float64()),
        ("start", pa.float64()),
        ("connect_ms", pa.float64()),
        ("query_ms", pa.float64()),
        ("service_ms", pa.float64()),
        ("total_ms", pa.float64()),
        ("ok", pa.bool_()),
        ("error_class", _DICT),
        ("sqlstate", _DICT),
        ("message", _DICT),
        ("repeat", pa.int16()),  # 1.1: the --repeat pass, 1-based (older files: 1)
    ],
    metadata={FORMAT_KEY: FORMAT.encode()},
)
COLUMNS = tuple(SCHEMA.names)
_STRING_COLUMNS = frozenset(f.name for f in SCHEMA if pa.types.is_dictionary(f.type))
# Columns added after requests/1, with the value an older file means: read_chunk fills them.
ADDED_COLUMNS: dict[str, Any] = {"repeat": 1}


def empty_table() -> pa.Table:
    return SCHEMA.empty_table()


def to_table(rows: Sequence[Sequence[Any]]) -> pa.Table:
    """Rows as tuples in ``COLUMNS`` order (NaN or None for a missing duration)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in COLUMNS]
    if len(columns) != len(COLUMNS):
        raise ValueError(f"a requests row has {len(columns)} values; {FORMAT} has "
                         f"{len(COLUMNS)} columns: {', '.join(COLUMNS)}")
    arrays = []
    for field, values in zip(SCHEMA, columns, strict=True):
        if field.name in _STRING_COLUMNS:
            arrays.append(pa.array(values, type=_DICT))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def write_table(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` whole or not at all (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table.replace_schema_metadata(SCHEMA.metadata), tmp,
                       compression=COMPRESSION, row_group_size=256 * 1024)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class ChunkWriter:
    """Buffers rows of one Locust process; ``flush`` writes them as one chunk file.

    ``add`` flushes by itself when the last flush is ``interval`` seconds old; the caller should
    also call ``flush`` on a timer (a quiet period must not hold rows back) and ``close`` when
    the test stops. Rows are handed over before the file is written, so rows added while a
    chunk is being written go to the next chunk.
    """

    def __init__(self, run_dir: Path | str, worker: int, *, interval: float = 1.0):
        self.dir = Path(run_dir) / CHUNK_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.worker = worker
        self.interval = interval
        self.seq = 0
        self.rows: list[tuple] = []
        self.written = 0
        self.files = 0
        self._last_flush = time.monotonic()

    def add(self, row: Sequence[Any]) -> None:
        self.rows.append(tuple(row))
        if time.monotonic() - self._last_flush >= self.interval:
            self.flush()

    def take(self) -> tuple[list[tuple], Path | None]:
        """Hand over the buffered rows and the path their chunk will have (None: no rows).
        ``write`` may then run on another thread while rows keep coming in."""
        self._last_flush = time.monotonic()
        rows, self.rows = self.rows, []
        return rows, (self._next_path() if rows else None)

    def write(self, rows: list[tuple], path: Path | None) -> Path | None:
        if not rows or path is None:
            return None
        write_table(to_table(rows), path)
        self.written += len(rows)
        self.files += 1
        return path

    def flush(self) -> Path | None:
        return self.write(*self.take())

    def _next_path(self) -> Path:
        while True:
            path = self.dir / f"part-{self.worker}-{self.seq:06d}.parquet"
            self.seq += 1
            if not path.exists():  # never overwrite another process's chunk
                return path

    def close(self) -> None:
        self.flush()


# -- reading -------------------------------------------------------------------------------


def check_format(metadata: dict[bytes, bytes] | None, source: Path) -> None:
    value = (metadata or {}).get(FORMAT_KEY)
    if value is None:
        raise ReportError(f"{source} is not a pooler-lab requests file (no format tag)",
                          fix="point at a run directory written by `lab run`")
    text = value.decode(errors="replace")
    kind, _, version = text.partition("/")
    major = version.split(".")[0]
    if kind != FORMAT_KIND or major != FORMAT_MAJOR:
        raise ReportError(f"{source} is format {text}; this pooler-lab reads "
                          f"{FORMAT_KIND}/{FORMAT_MAJOR}.x",
                          fix="upgrade pooler-lab (pip install -U pooler-lab) to read it")


def read_chunk(path: Path | str, columns: Iterable[str] | None = None) -> pa.Table:
    """One Parquet file of requests/1.x (a chunk or requests.parquet), in the current schema:
    columns a file predates are filled with what they meant then (``repeat`` = 1), columns a
    newer minor version added are left out. ``columns`` selects (and orders) columns."""
    path = Path(path)
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ReportError(f"{path} is unreadable ({exc})",
                          fix="delete the damaged file and run `lab report` again") from None
    check_format(schema.metadata, path)
    wanted = list(columns) if columns is not None else list(COLUMNS)
    present = set(schema.names)
    unknown = [c for c in wanted if c not in present and c not in ADDED_COLUMNS]
    if unknown:
        raise ReportError(f"{path} has no column {', '.join(map(repr, unknown))}",
                          fix=f"read the columns of {FORMAT}: {', '.join(COLUMNS)}")
    table = pq.read_table(path, columns=[c for c in wanted if c in present])
    if len(table.column_names) == len(wanted):
        return table.select(wanted)
    arrays, fields = [], []
    for name in wanted:
        if name in present:
            arrays.append(table.column(name))
            fields.append(table.schema.field(name))
        else:
            field = SCHEMA.field(name)
            arrays.append(pa.array([ADDED_COLUMNS[name]] * table.num_rows, type=field.type))
            fields.append(field)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=table.schema.metadata))


def chunk_paths(run_dir: Path | str) -> list[Path]:
    """Every whole chunk of a run (temporary files are hidden and never match)."""
    return sorted((Path(run_dir) / CHUNK_DIR).glob(CHUNK_GLOB))


def read_requests(run_dir: Path | str, columns: Iterable[str] | None = None) -> pa.Table:
    """All requests of a run: ``requests.parquet`` when present, else every chunk."""
    run_dir = Path(run_dir)
    columns = list(columns) if columns is not None else None
    merged = run_dir / FILE
    if merged.exists():
        return read_chunk(merged, columns)
    if not (run_dir / CHUNK_DIR).is_dir():
        raise ReportError(f"{run_dir} has no request samples ({FILE} or {CHUNK_DIR}/)",
                          fix="point at a run directory written by `lab run`")
    tables = [read_chunk(path, columns) for path in chunk_paths(run_dir)]
    return _concat(tables, columns)


def _concat(tables: list[pa.Table], columns: list[str] | None) -> pa.Table:
    if not tables:
        empty = empty_table()
        return empty.select(columns) if columns is not None else empty
    return pa.concat_tables(tables).replace_schema_metadata(SCHEMA.metadata)


def compact(run_dir: Path | str) -> Path:
    """Merge the chunks of a run into ``requests.parquet`` (sorted by start) and remove them.

    Safe to repeat: once ``requests.parquet`` exists it holds every chunk (it is renamed into
    place only when whole), so leftover chunks are just removed. A run without any samples gets
    an empty ``requests.parquet``, so readers find the same file every time.
    """
    run_dir = Path(run_dir)
    merged = run_dir / FILE
    chunk_dir = run_dir / CHUNK_DIR
    if not merged.exists():
        tables = [read_chunk(path) for path in chunk_paths(run_dir)]
        table = _concat(tables, None)
        if table.num_rows:
            table = table.unify_dictionaries().combine_chunks()
            table = table.take(pc.sort_indices(table, [("start", "ascending")]))
        write_table(table, merged)
    if chunk_dir.is_dir():
        shutil.rmtree(chunk_dir, ignore_errors=True)
    return merged
