"""Raw per-request samples, format ``requests/1.1`` (see docs/formats.md).

Load processes write them with ``ChunkWriter``: rows are buffered and about once a second a
complete chunk ``requests/part-<worker>-<seq>.arrow`` appears, an Arrow IPC file (written under
a hidden temporary name, then renamed, so every ``part-*`` file is whole). When the run ends
``compact`` merges the chunks into ``requests.parquet`` (also through a rename) and removes
``requests/``. ``read_requests`` reads whichever is there, and the Parquet chunks
(``part-*.parquet``) of runs written before the chunks were Arrow IPC files.

Strings that repeat (scenario, endpoint, phase, name, error class, SQLSTATE, message) are
dictionary-encoded and the files zstd-compressed: a million rows stay a few megabytes and load
in well under a second.

Version 1.1 added the column ``repeat`` (the ``--repeat`` pass a row belongs to). Readers take
any ``requests/1.x`` file: a file without ``repeat`` (``requests/1``) reads as repeat 1, so old
run directories and a mix of old and new chunks read as one table of the current schema.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import struct
import time
from collections.abc import Container, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lab.errors import ReportError

FORMAT = "requests/1.1"
FORMAT_KIND, FORMAT_MAJOR = "requests", "1"
FORMAT_KEY = b"pooler-lab.format"
FILE = "requests.parquet"
CHUNK_DIR = "requests"
CHUNK_SUFFIX = ".arrow"
# chunks as written now, and as runs before 2026-12-02 wrote them (Parquet): both are read
CHUNK_GLOBS = (f"part-*{CHUNK_SUFFIX}", "part-*.parquet")
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


# A chunk lives until ``compact``: it is written beside the load, once a second, and read once
# by the live counters, so it is an Arrow IPC file: the columns as they are in memory, no
# encoding, no compression. Against the uncompressed Parquet chunks it replaced, for a
# 1,100-row chunk (docs/benchmarks.md): written in 420 us of CPU instead of 1,180, its three
# live columns read in 110 instead of 340, about 89 bytes a row instead of 64 (lz4 IPC: 43,
# but its writing costs 770 us). requests.parquet, kept, is zstd Parquet.
FILE_OPTIONS: dict[str, Any] = {"compression": COMPRESSION}


def write_table(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` whole or not at all (temporary file, then rename): Arrow
    IPC for a chunk's ``CHUNK_SUFFIX``, else zstd Parquet."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    table = table.replace_schema_metadata(SCHEMA.metadata)
    try:
        if path.suffix == CHUNK_SUFFIX:
            if any(column.num_chunks > 1 for column in table.columns):
                # an IPC file holds one dictionary per column
                table = table.unify_dictionaries().combine_chunks()
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
                out.write_table(table)
        else:
            pq.write_table(table, tmp, row_group_size=256 * 1024, **FILE_OPTIONS)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# A success on the request path (ChunkWriter.oks): these doubles, perf_counter seconds,
# packed by OK_PACK (one bytes object per request, appended in place: the cheapest way found to
# hand six floats over in CPython, 140 ns; a list of tuples costs as much again to convert).
OK_FIELDS = ("kind", "intended", "start", "connected", "end", "query_s")
OK_STRUCT = struct.Struct(f"={len(OK_FIELDS)}d")
OK_PACK = OK_STRUCT.pack
# The identifying columns a kind stands for (ChunkWriter.kind).
KIND_COLUMNS = ("scenario", "endpoint", "phase", "name", "worker", "user", "repeat")


class ChunkWriter:
    """Buffers rows of one Locust process; ``flush`` writes them as one chunk file.

    Two buffers, one chunk. ``rows``: whole rows as tuples in ``COLUMNS`` order (failures,
    unfinished and not_started rows: the rare ones). ``oks``: successful requests, the hot
    path, as ``OK_FIELDS`` doubles packed into one ``bytearray``: no Python object per request
    lives past the request, and a chunk's columns come out of the buffer with numpy,
    not row by row (bench/request_path.py, issue "Scale": the lean load path). A success's
    identifying columns are a ``kind`` (registered once per user and request name); its
    times are perf_counter seconds, turned into wall-clock times (``to_wall`` added) and the
    format's milliseconds when the chunk is written, with the same float arithmetic a row
    would have had.

    ``add`` flushes by itself when the last flush is ``interval`` seconds old; the caller should
    also call ``flush`` on a timer (a quiet period must not hold rows back) and ``close`` when
    the test stops. Rows are handed over before the file is written, so rows added while a
    chunk is being written go to the next chunk.
    """

    def __init__(self, run_dir: Path | str, worker: int, *, interval: float = 1.0,
                 to_wall: float = 0.0):
        self.dir = Path(run_dir) / CHUNK_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.worker = worker
        self.interval = interval
        self.to_wall = to_wall
        self.seq = 0
        self.rows: list[tuple] = []
        self.oks = bytearray()  # OK_PACK'd successes; one object for good (callers hold it)
        self.kinds: list[tuple] = []
        self.written = 0
        self.files = 0
        self._last_flush = time.monotonic()

    def add(self, row: Sequence[Any]) -> None:
        self.rows.append(tuple(row))
        if time.monotonic() - self._last_flush >= self.interval:
            self.flush()

    def kind(self, scenario: str, endpoint: str, phase: str, name: str, worker: int,
             user: int, repeat: int) -> float:
        """Register the identifying columns (``KIND_COLUMNS``) of successes to come; the
        returned id is their first ``OK_FIELDS`` value."""
        self.kinds.append((scenario, endpoint, phase, name, worker, user, repeat))
        return float(len(self.kinds) - 1)

    def add_ok(self, kind: float, intended: float, start: float, connected: float,
               end: float, query_s: float) -> None:
        """One success (perf_counter seconds; ``query_s`` NaN when no query ran). The request
        path appends to ``oks`` itself; this is the same, spelled out."""
        self.oks += OK_PACK(kind, intended, start, connected, end, query_s)

    def take(self) -> tuple[Batch, Path | None]:
        """Hand over the buffered rows and the path their chunk will have (None: no rows).
        ``write`` may then run on another thread while rows keep coming in."""
        self._last_flush = time.monotonic()
        rows, self.rows = self.rows, []
        oks = bytes(self.oks)  # a copy; the buffer stays the object callers append to
        del self.oks[:]
        batch = Batch(rows, oks, list(self.kinds), self.to_wall)
        return batch, (self._next_path() if len(batch) else None)

    def write(self, batch: Batch, path: Path | None) -> Path | None:
        if not len(batch) or path is None:
            return None
        write_table(batch.table(), path)
        self.written += len(batch)
        self.files += 1
        return path

    def flush(self) -> Path | None:
        return self.write(*self.take())

    def _next_path(self) -> Path:
        while True:
            path = self.dir / f"part-{self.worker}-{self.seq:06d}{CHUNK_SUFFIX}"
            self.seq += 1
            if not path.exists():  # never overwrite another process's chunk
                return path

    def close(self) -> None:
        self.flush()


class Batch:
    """What ``ChunkWriter.take`` hands over: whole rows and the columnar successes."""

    def __init__(self, rows: list[tuple], oks: bytes, kinds: list[tuple], to_wall: float):
        self.rows = rows
        self.oks = oks
        self.kinds = kinds
        self.to_wall = to_wall

    def __len__(self) -> int:
        return len(self.rows) + len(self.oks) // OK_STRUCT.size

    def table(self) -> pa.Table:
        parts = []
        if self.rows:
            parts.append(to_table(self.rows))
        if self.oks:
            parts.append(ok_table(self.oks, self.kinds, self.to_wall))
        if len(parts) == 1:
            return parts[0]
        return pa.concat_tables(parts).unify_dictionaries().combine_chunks()


def ok_array(oks: bytes) -> np.ndarray:
    """The successes of a ``ChunkWriter.oks`` buffer as a (rows, ``OK_FIELDS``) float64 view."""
    return np.frombuffer(oks, dtype=np.float64).reshape(-1, len(OK_FIELDS))


def ok_table(oks: bytes, kinds: Sequence[tuple], to_wall: float) -> pa.Table:
    """Successes (``OK_FIELDS`` doubles each) as a table of the current schema: the same
    values ``to_table`` gives for their rows (wall = perf + to_wall, milliseconds = seconds
    difference x 1000.0, float64 throughout)."""
    a = ok_array(oks)
    n = len(a)
    kind = a[:, 0].astype(np.int32)
    intended, start, connected, end = a[:, 1], a[:, 2], a[:, 3], a[:, 4]
    columns: dict[str, pa.Array] = {}
    for i, col in enumerate(KIND_COLUMNS):
        values = [k[i] for k in kinds]
        if col in _STRING_COLUMNS:
            dictionary = list(dict.fromkeys(values))
            codes = np.array([dictionary.index(v) for v in values], dtype=np.int32)
            columns[col] = pa.DictionaryArray.from_arrays(
                pa.array(codes[kind], type=pa.int32()), pa.array(dictionary, type=pa.string()))
        else:
            columns[col] = pa.array(np.array(values)[kind], type=SCHEMA.field(col).type)
    columns["intended_start"] = pa.array(intended + to_wall)
    columns["start"] = pa.array(start + to_wall)
    columns["connect_ms"] = pa.array((connected - start) * 1000.0)
    columns["query_ms"] = pa.array(a[:, 5] * 1000.0)
    columns["service_ms"] = pa.array((end - start) * 1000.0)
    columns["total_ms"] = pa.array((end - intended) * 1000.0)
    columns["ok"] = pa.array(np.ones(n, dtype=bool))
    for col in ("error_class", "sqlstate", "message"):
        columns[col] = pa.nulls(n, type=_DICT)
    return pa.Table.from_arrays([columns[f.name] for f in SCHEMA], schema=SCHEMA)


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


def read_chunk(path: Path | str, columns: Iterable[str] | None = None, *,
               threads: bool = True) -> pa.Table:
    """One file of requests/1.x (a chunk, Arrow IPC or Parquet, or requests.parquet), in the
    current schema: columns a file predates are filled with what they meant then (``repeat``
    = 1), columns a newer minor version added are left out. ``columns`` selects (and orders)
    columns. ``threads=False``: read a Parquet file on this thread alone, without Arrow's
    read-ahead; for a chunk of a few thousand rows that costs half the CPU."""
    path = Path(path)
    wanted = list(columns) if columns is not None else list(COLUMNS)

    def check(schema: pa.Schema) -> list[str]:
        """The wanted columns the file has; raises for a foreign file or unknown column."""
        check_format(schema.metadata, path)
        present = set(schema.names)
        unknown = [c for c in wanted if c not in present and c not in ADDED_COLUMNS]
        if unknown:
            raise ReportError(f"{path} has no column {', '.join(map(repr, unknown))}",
                              fix=f"read the columns of {FORMAT}: {', '.join(COLUMNS)}")
        return [c for c in wanted if c in present]

    try:
        if path.suffix == CHUNK_SUFFIX:
            with pa.OSFile(str(path)) as source:
                reader = pa.ipc.open_file(source)
                table = reader.read_all().select(check(reader.schema))
        else:
            # one open and one footer for the schema and the data (read_schema + read_table:
            # two, and a dataset's machinery)
            with pq.ParquetFile(path, pre_buffer=threads) as file:
                table = file.read(columns=check(file.schema_arrow), use_threads=threads)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ReportError(f"{path} is unreadable ({exc})",
                          fix="delete the damaged file and run `lab report` again") from None
    if len(table.column_names) == len(wanted):
        return table.select(wanted)
    present = set(table.column_names)
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


def chunk_names(run_dir: Path | str, skip: Container[str] = ()) -> list[str]:
    """The file names of every whole chunk of a run, in order (temporary files are hidden and
    never match), but those in ``skip``. By name, without a Path per entry: the live counters
    list the folder twice a second, and a long run's holds a chunk per second per Locust
    process (the ones they have read are skipped before any pattern is matched)."""
    try:
        names = os.listdir(Path(run_dir) / CHUNK_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n not in skip
                  and any(fnmatch.fnmatchcase(n, glob) for glob in CHUNK_GLOBS))


def chunk_paths(run_dir: Path | str) -> list[Path]:
    """Every whole chunk of a run."""
    return [Path(run_dir) / CHUNK_DIR / name for name in chunk_names(run_dir)]


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
