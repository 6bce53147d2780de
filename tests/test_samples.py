"""requests/1 chunks, reading and compaction (real Parquet files in a temporary run dir)."""

from __future__ import annotations

import math
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lab import samples
from lab.errors import ReportError


def row(i: int, ok: bool = True, worker: int = 0, repeat: int = 1) -> tuple:
    start = 1_800_000_000.0 + i * 0.001
    return ("serverless-burst", "direct", "serverless", "invocation", worker, i % 7,
            start - 0.0005, start, 1.5, 0.000185 if ok else math.nan, 2.0, 2.5, ok,
            None if ok else "too_many_clients", None if ok else "53300",
            None if ok else "sorry, too many clients already", repeat)


def write_v1(path, rows: list[tuple]) -> None:
    """A requests/1 file as pooler-lab wrote it before the `repeat` column."""
    table = samples.to_table(rows).drop_columns(["repeat"])
    pq.write_table(table.replace_schema_metadata({b"pooler-lab.format": b"requests/1"}), path)


def test_chunks_are_whole_files_with_the_format_tag(tmp_path):
    w = samples.ChunkWriter(tmp_path, worker=3, interval=3600)
    for i in range(10):
        w.add(row(i))
    assert w.flush() == tmp_path / "requests" / "part-3-000000.arrow"
    assert w.flush() is None  # nothing buffered: no empty chunk
    w.add(row(10, ok=False))
    w.close()
    files = samples.chunk_paths(tmp_path)
    assert [f.name for f in files] == ["part-3-000000.arrow", "part-3-000001.arrow"]
    assert not [p for p in (tmp_path / "requests").iterdir() if p.name.startswith(".")]
    with pa.OSFile(str(files[0])) as source:  # an Arrow IPC file, as any Arrow reader sees it
        meta = pa.ipc.open_file(source).schema.metadata
    assert meta[b"pooler-lab.format"] == b"requests/1.1"
    table = samples.read_requests(tmp_path)
    assert table.num_rows == 11 and table.column_names == list(samples.COLUMNS)
    assert table.schema.field("scenario").type == pa.dictionary(pa.int32(), pa.string())
    assert table.schema.field("worker").type == pa.int16()
    assert table.schema.field("repeat").type == pa.int16()
    assert table.column_names[-1] == "repeat" and set(table.column("repeat").to_pylist()) == {1}
    rows = table.to_pylist()
    assert rows[0]["query_ms"] == pytest.approx(0.000185)  # sub-millisecond kept, not rounded
    failed = rows[-1]
    assert failed["ok"] is False and math.isnan(failed["query_ms"])
    assert (failed["error_class"], failed["sqlstate"]) == ("too_many_clients", "53300")
    assert rows[0]["error_class"] is None


def test_parquet_chunks_of_older_runs_read_beside_new_ones(tmp_path):
    """Runs before 2026-12-02 wrote Parquet chunks: a killed one's are still read (and
    compacted), with the Arrow IPC chunks of today in the same folder."""
    w = samples.ChunkWriter(tmp_path, worker=0, interval=3600)
    for i in range(5):
        w.add(row(i))
    w.close()
    old = samples.to_table([row(i, worker=1) for i in range(5, 8)])
    samples.write_table(old, tmp_path / "requests" / "part-1-000000.parquet")
    assert [p.name for p in samples.chunk_paths(tmp_path)] == [
        "part-0-000000.arrow", "part-1-000000.parquet"]
    assert samples.read_requests(tmp_path, columns=["worker"]).column(
        "worker").to_pylist() == [0] * 5 + [1] * 3
    merged = samples.compact(tmp_path)
    assert pq.read_table(merged).num_rows == 8 and not (tmp_path / "requests").exists()


def test_a_torn_chunk_is_an_error_that_names_the_file(tmp_path):
    w = samples.ChunkWriter(tmp_path, worker=0, interval=3600)
    w.add(row(0))
    path = w.flush()
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ReportError, match="part-0-000000.arrow is unreadable"):
        samples.read_chunk(path)


def test_add_flushes_after_the_interval(tmp_path):
    w = samples.ChunkWriter(tmp_path, worker=0, interval=0.05)
    w.add(row(0))
    assert samples.chunk_paths(tmp_path) == []
    time.sleep(0.06)
    w.add(row(1))
    assert len(samples.chunk_paths(tmp_path)) == 1


def test_take_then_write_lets_rows_keep_coming(tmp_path):
    w = samples.ChunkWriter(tmp_path, worker=0, interval=3600)
    w.add(row(0))
    rows, path = w.take()
    w.add(row(1))  # arrives while the first chunk is being written elsewhere
    w.write(rows, path)
    w.close()
    assert samples.read_requests(tmp_path).num_rows == 2
    assert w.written == 2 and w.files == 2


def test_writers_never_overwrite_each_other(tmp_path):
    a = samples.ChunkWriter(tmp_path, worker=0)
    b = samples.ChunkWriter(tmp_path, worker=0)  # e.g. a restarted process, same index
    a.add(row(0))
    a.flush()
    b.add(row(1))
    b.flush()
    assert samples.read_requests(tmp_path).num_rows == 2


def test_reader_skips_temporary_files_and_reads_columns(tmp_path):
    w = samples.ChunkWriter(tmp_path, worker=1)
    w.add(row(0))
    w.close()
    (tmp_path / "requests" / ".part-1-000001.arrow.123.tmp").write_bytes(b"ARROW1 torn")
    table = samples.read_requests(tmp_path, columns=["start", "ok"])
    assert table.column_names == ["start", "ok"] and table.num_rows == 1


def test_compact_merges_sorts_and_removes_chunks(tmp_path):
    writers = [samples.ChunkWriter(tmp_path, worker=k) for k in range(2)]
    for i in range(1000):
        writers[i % 2].add(row(999 - i, ok=i % 10 != 0, worker=i % 2))
        if i % 300 == 0:
            writers[i % 2].flush()
    for w in writers:
        w.close()
    before = samples.read_requests(tmp_path)
    merged = samples.compact(tmp_path)
    assert merged == tmp_path / "requests.parquet"
    assert not (tmp_path / "requests").exists()
    after = samples.read_requests(tmp_path)
    assert after.num_rows == before.num_rows == 1000
    starts = after.column("start").to_pylist()
    assert starts == sorted(starts)
    assert after.column("ok").to_pylist().count(False) == 100
    assert set(after.column("worker").to_pylist()) == {0, 1}
    # safe to repeat, and a leftover chunk dir (crash after the rename) is just removed
    (tmp_path / "requests").mkdir()
    samples.compact(tmp_path)
    assert samples.read_requests(tmp_path).num_rows == 1000
    assert not (tmp_path / "requests").exists()


def test_compact_without_samples_writes_an_empty_file(tmp_path):
    (tmp_path / "requests").mkdir()
    samples.compact(tmp_path)
    table = samples.read_requests(tmp_path)
    assert table.num_rows == 0 and table.column_names == list(samples.COLUMNS)


def test_refuses_unknown_major_format_and_foreign_files(tmp_path):
    table = samples.to_table([row(0)]).replace_schema_metadata(
        {b"pooler-lab.format": b"requests/2"})
    pq.write_table(table, tmp_path / "requests.parquet")
    with pytest.raises(ReportError, match="requests/2") as info:
        samples.read_requests(tmp_path)
    assert "upgrade" in info.value.fix and "reads requests/1.x" in info.value.message
    pq.write_table(pa.table({"x": [1]}), tmp_path / "requests.parquet")
    with pytest.raises(ReportError, match="not a pooler-lab requests file"):
        samples.read_requests(tmp_path)
    (tmp_path / "requests.parquet").write_bytes(b"not parquet")
    with pytest.raises(ReportError, match="unreadable"):
        samples.read_requests(tmp_path)


def test_minor_versions_are_read(tmp_path):
    table = samples.to_table([row(0)]).replace_schema_metadata(
        {b"pooler-lab.format": b"requests/1.1"})
    pq.write_table(table, tmp_path / "requests.parquet")
    assert samples.read_requests(tmp_path).num_rows == 1


def test_a_row_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="17 columns"):
        samples.to_table([row(0)[:-1]])


def test_the_repeat_column_round_trips(tmp_path):
    w = samples.ChunkWriter(tmp_path, worker=0)
    w.add(row(0, repeat=1))
    w.add(row(1, repeat=3))
    w.close()
    table = samples.read_requests(tmp_path, columns=["repeat", "ok"])
    assert table.column_names == ["repeat", "ok"]
    assert table.column("repeat").to_pylist() == [1, 3]


def test_a_requests_1_file_without_repeat_reads_as_repeat_1(tmp_path):
    write_v1(tmp_path / "requests.parquet", [row(0), row(1, ok=False)])
    table = samples.read_requests(tmp_path)
    assert table.column_names == list(samples.COLUMNS) and table.num_rows == 2
    assert table.schema.field("repeat").type == pa.int16()
    assert table.column("repeat").to_pylist() == [1, 1]
    picked = samples.read_requests(tmp_path, columns=["ok", "repeat", "error_class"])
    assert picked.column_names == ["ok", "repeat", "error_class"]
    assert picked.to_pylist() == [{"ok": True, "repeat": 1, "error_class": None},
                                  {"ok": False, "repeat": 1, "error_class": "too_many_clients"}]
    assert samples.read_requests(tmp_path, columns=["repeat"]).column("repeat").to_pylist() \
        == [1, 1]
    with pytest.raises(ReportError, match="no column 'nope'"):
        samples.read_requests(tmp_path, columns=["ok", "nope"])


def test_old_and_new_chunks_read_and_compact_together(tmp_path):
    folder = tmp_path / "requests"
    folder.mkdir()
    write_v1(folder / "part-0-000000.parquet", [row(0), row(2)])
    w = samples.ChunkWriter(tmp_path, worker=1)
    w.add(row(1, repeat=2))
    w.close()
    for columns in (None, ["start", "repeat"]):
        table = samples.read_requests(tmp_path, columns=columns)
        assert table.num_rows == 3
        assert sorted(table.column("repeat").to_pylist()) == [1, 1, 2]
    samples.compact(tmp_path)
    merged = samples.read_requests(tmp_path)
    assert pq.read_schema(tmp_path / "requests.parquet").metadata[b"pooler-lab.format"] == \
        b"requests/1.1"
    assert merged.column("repeat").to_pylist() == [1, 2, 1]  # sorted by start
    assert merged.column_names == list(samples.COLUMNS)


def test_a_newer_minor_version_reads_its_known_columns(tmp_path):
    table = samples.to_table([row(0)]).append_column("future", pa.array([5]))
    pq.write_table(table.replace_schema_metadata({b"pooler-lab.format": b"requests/1.7"}),
                   tmp_path / "requests.parquet")
    assert samples.read_requests(tmp_path).column_names == list(samples.COLUMNS)


def test_missing_run_dir_is_a_report_error(tmp_path):
    with pytest.raises(ReportError, match="no request samples"):
        samples.read_requests(tmp_path / "nope")


def test_a_million_rows_stay_small(tmp_path):
    # Size only: how fast they load is measured by bench/report_1m.py, never asserted here.
    n = 1_000_000
    w = samples.ChunkWriter(tmp_path, worker=0, interval=3600)
    base = [row(i, ok=i % 50 != 0) for i in range(1000)]
    for k in range(n // 1000):
        # 1000 distinct rows repeated with shifted starts: realistic repetition of strings
        w.rows.extend(r[:6] + (r[6] + k, r[7] + k) + r[8:] for r in base)
        if k % 50 == 49:
            w.flush()
    w.close()
    samples.compact(tmp_path)
    size = (tmp_path / "requests.parquet").stat().st_size
    table = samples.read_requests(tmp_path)
    assert table.num_rows == n
    assert size < 30 * 1024 * 1024, size


def test_columnar_successes_are_the_rows_the_request_path_used_to_write(tmp_path):
    # ChunkWriter.oks holds successes as perf_counter doubles; the chunk must hold exactly the
    # values a whole row computed in Python would (wall = perf + to_wall, ms = diff x 1000.0).
    to_wall = 1_800_000_000.123456 - 52_345.678901
    w = samples.ChunkWriter(tmp_path, worker=2, interval=3600, to_wall=to_wall)
    kinds = [w.kind("app-server", "transaction", "persistent", name, 2, user, 3)
             for user, name in ((0, "read"), (1, "read"), (1, "write"))]
    held = w.oks
    expected = []
    for i in range(300):
        kind = kinds[i % 3]
        _, _, _, name, _, user, _ = w.kinds[int(kind)]
        intended = 52_345.678901 + i * 0.0013
        start = intended + (i % 5) * 1e-4
        connected = start + 2.5e-5
        end = connected + 0.000731 + i * 1e-7
        query_s = math.nan if i % 50 == 0 else end - connected - 1e-6
        w.add_ok(kind, intended, start, connected, end, query_s)
        expected.append(("app-server", "transaction", "persistent", name, 2, user,
                         intended + to_wall, start + to_wall, (connected - start) * 1000.0,
                         query_s * 1000.0, (end - start) * 1000.0, (end - intended) * 1000.0,
                         True, None, None, None, 3))
    failure = row(7, ok=False, worker=2, repeat=3)
    w.add(failure)
    expected.append(failure)
    assert w.flush() is not None
    assert w.oks is held and len(held) == 0  # emptied in place: the request path holds it
    assert w.written == 301
    w.add_ok(kinds[0], 1.0, 1.0, 1.0, 1.0, 0.0)  # the next chunk
    w.close()
    got = samples.read_requests(tmp_path).to_pylist()
    assert len(got) == 302
    key = {c: i for i, c in enumerate(samples.COLUMNS)}
    want = sorted((dict(zip(samples.COLUMNS, r, strict=True)) for r in expected),
                  key=lambda r: r["start"])
    got = sorted(got[:301], key=lambda r: r["start"])
    assert len(key) == len(got[0])
    for g, e in zip(got, want, strict=True):
        for column in samples.COLUMNS:
            a, b = g[column], e[column]
            if isinstance(b, float) and math.isnan(b):
                assert isinstance(a, float) and math.isnan(a), column
            else:
                assert a == b, (column, a, b)  # bit for bit, not approximately


def test_a_chunk_of_successes_alone_reads_as_the_schema(tmp_path):
    w = samples.ChunkWriter(tmp_path, worker=0, interval=3600)
    kind = w.kind("s", "direct", "closed", "request", 0, 0, 1)
    w.add_ok(kind, 10.0, 10.5, 10.75, 11.0, 0.125)
    w.close()
    t = samples.read_requests(tmp_path)
    assert t.schema == samples.SCHEMA.remove_metadata().with_metadata(t.schema.metadata)
    r = t.to_pylist()[0]
    assert (r["connect_ms"], r["query_ms"], r["service_ms"], r["total_ms"]) == \
        (250.0, 125.0, 500.0, 1000.0)
    assert r["ok"] is True and r["error_class"] is None and r["message"] is None
