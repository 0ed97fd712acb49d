"""Reading and writing tables: globs, fsspec URLs, atomic writes."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tablebatch.io import read_table, write_table
from tablebatch.jobs.errors import DataError


def test_a_glob_of_csv_files_is_one_table(tmp_path: Path) -> None:
    (tmp_path / "part-1.csv").write_text("id,text\n007,a\n")
    (tmp_path / "part-2.csv").write_text("id,text\n008,b\n")
    table = read_table(str(tmp_path / "part-*.csv"), string_columns=["id"])
    assert table.column("id").to_pylist() == ["007", "008"]  # ids stay text


def test_an_fsspec_url() -> None:
    with fsspec.open("memory://tablebatch-test/rows.csv", "wb") as handle:
        handle.write(b"id,text\nx1,hello\n")
    table = read_table("memory://tablebatch-test/rows.csv", string_columns=["id"])
    assert table.to_pylist() == [{"id": "x1", "text": "hello"}]
    write_table(table, "memory://tablebatch-test/out.parquet")
    assert read_table("memory://tablebatch-test/out.parquet").num_rows == 1
    with pytest.raises(DataError, match="no such file"):
        read_table("memory://tablebatch-test/missing.csv")


def test_writes_are_atomic_and_leave_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "out" / "t.csv"
    write_table(pa.table({"a": [1, 2]}), str(path))
    assert path.read_text().splitlines() == ['"a"', "1", "2"]
    assert [p.name for p in path.parent.iterdir()] == ["t.csv"]


@pytest.mark.parametrize("where", ["local", "memory"])
def test_a_csv_of_many_blocks_reads_whole(tmp_path: Path, where: str) -> None:
    # ids read as text take a look at the header first; that look reads ahead in the
    # background, and once shared the file's handle with the read, which tore rows apart
    # in CSVs over a block (1 MB): parse errors, or rows of mixed-up text
    lines = ["id,text,label"] + [
        f'k{i:07d},"good and bad, item {i}",x{i % 3}' for i in range(150_000)
    ]
    data = ("\n".join(lines) + "\n").encode()
    if where == "local":
        path = tmp_path / "rows.csv"
        path.write_bytes(data)
        name = str(path)
    else:
        name = "memory://tablebatch-test/many-blocks.csv"
        with fsspec.open(name, "wb") as handle:
            handle.write(data)
    for _ in range(3):
        table = read_table(name, string_columns=["id"])
        assert table.num_rows == 150_000
        assert table.column("text")[149_999].as_py() == "good and bad, item 149999"
        assert table.column("id").to_pylist()[::10_000] == [
            f"k{i:07d}" for i in range(0, 150_000, 10_000)
        ]
        assert pc.all(pc.starts_with(table.column("text"), "good and bad, item ")).as_py()


def test_a_handed_over_table_is_read_once_while_its_file_is_unchanged(tmp_path) -> None:
    import os

    from tablebatch.io import _handed, file_key, hand_over, read_table

    path = tmp_path / "rows.csv"
    path.write_text("id,text\n1,a\n2,b\n")
    key = file_key(str(path), ["id"])
    checked = read_table(str(path), ["id"])
    hand_over(str(path), ["id"], checked, key)
    assert read_table(str(path), ["id"]) is checked  # the flow takes the command's table
    assert read_table(str(path), ["id"]) is not checked  # once: then it is read again
    hand_over(str(path), ["id"], checked, key)
    assert read_table(str(path), []) is not checked  # read otherwise: read anew
    assert not _handed  # and not held for the rest of the run
    hand_over(str(path), ["id"], checked, key)
    path.write_text("id,text\n1,a\n2,b\n3,c\n")  # the file changed since the check
    os.utime(path, ns=(1, 1))
    changed = read_table(str(path), ["id"])
    assert changed is not checked and changed.num_rows == 3
    before = file_key(str(path), ["id"])  # changed while it was read: not handed over
    table = read_table(str(path), ["id"])
    path.write_text("id,text\n1,a\n")
    hand_over(str(path), ["id"], table, before)
    assert not _handed and read_table(str(path), ["id"]).num_rows == 1


def test_a_table_s_ids_are_checked_once(monkeypatch) -> None:
    """The flow's load checks the table the CLI's checks read without counting its ids
    again; another table, or other id columns, is checked anew (and a bad one fails)."""
    import tablebatch.jobs.preflight as preflight
    from tablebatch.jobs.config import parse_config
    from tablebatch.jobs.errors import DataError

    data = {
        "name": "j",
        "kind": "generation",
        "input": {"path": "x.csv", "id_column": "id"},
        "prompt": {"template": "{text}"},
        "model": "m",
    }
    config = parse_config(data, "j.yaml")
    calls: list[int] = []
    real = preflight.check_table

    def counting(table: pa.Table, config: object, source: str) -> pa.Array:
        calls.append(table.num_rows)
        return real(table, config, source)

    monkeypatch.setattr(preflight, "check_table", counting)
    table = pa.table({"id": ["a", "b"], "text": ["x", "y"]})
    first = preflight.checked_ids(table, config, "x.csv")
    assert preflight.checked_ids(table, config, "x.csv") is first and calls == [2]
    other = pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"]})
    assert preflight.checked_ids(other, config, "x.csv").to_pylist() == ["a", "b", "c"]
    assert calls == [2, 3]
    renamed = parse_config({**data, "input": {"path": "x.csv", "id_column": "text"}}, "j.yaml")
    assert preflight.checked_ids(other, renamed, "x.csv").to_pylist() == ["x", "y", "z"]
    with pytest.raises(DataError, match="repeats"):
        preflight.checked_ids(pa.table({"id": ["a", "a"], "text": ["x", "y"]}), config, "x")
    del other
    assert preflight._last_check is not None and preflight._last_check[0]() is None


@pytest.mark.parametrize("rows, group", [(0, None), (5, None), (150_000, None), (150_000, 40_000)])
def test_parquet_read_in_batches_is_the_whole_table(tmp_path: Path, rows: int, group: int) -> None:
    """Read a batch at a time (one row group of 150,000 rows is three batches), the table
    is the file's: its rows, types, nulls, nested values and schema metadata."""
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": [f"r{i}" for i in range(rows)],
            "n": [None if i % 7 == 0 else i for i in range(rows)],
            "tags": [[str(i % 3)] * (i % 3) for i in range(rows)],
        }
    ).replace_schema_metadata({"origin": "test"})
    path = tmp_path / "rows.parquet"
    pq.write_table(table, path, row_group_size=group)
    read = read_table(str(path))
    assert read.equals(pq.read_table(path))
    assert read.schema.metadata == pq.read_table(path).schema.metadata
    assert read.num_rows == rows


def test_parquet_dictionaries_only_for_columns_that_repeat(tmp_path: Path) -> None:
    """The output's Parquet file tries a dictionary only on columns whose first chunk
    repeats its values; the file reads back the same either way."""
    import pyarrow.parquet as pq

    from tablebatch.io import dictionary_columns, table_writer

    n = 1000
    table = pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "status": ["completed", "failed"] * (n // 2),
            "tokens": [i % 7 for i in range(n)],
            "tags": [["a", "b"]] * n,
        }
    )
    assert dictionary_columns(table) == ["status", "tokens"]
    path = tmp_path / "out.parquet"
    with table_writer(str(path), table.schema, table.slice(0, 500)) as write:
        write(table.slice(0, 500))
        write(table.slice(500))
    column = {
        c.path_in_schema: c
        for c in (pq.ParquetFile(path).metadata.row_group(0).column(i) for i in range(4))
    }
    assert "RLE_DICTIONARY" in column["status"].encodings
    assert "RLE_DICTIONARY" not in column["id"].encodings
    assert pq.read_table(path).equals(table)
