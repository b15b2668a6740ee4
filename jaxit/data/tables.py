"""Data files of one's own as rows of fields: CSV / TSV (with or without a header), JSONL and
parquet, read through the same readers as `jaxit predict`'s input (`jaxit.data.text_inputs`).

`read_table(path)` gives a `Table`: the column names (None for a header-less CSV/TSV, whose
columns are then referred to by 0-based position) and one `(line, record)` per row, where
`line` is the 1-based line the row starts on (parquet: the row number) and `record` maps a
column (name, or position) to its raw value. A UTF-8 BOM is dropped; a quoted CSV field may
hold commas and newlines; TSVs are read without quote handling (GLUE's rule).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from jaxit.data.example import DataFormatError
from jaxit.data.text_inputs import InputError, csv_reader, decode_utf8, read_bytes, split_lines

TABLE_FORMATS = ("csv", "tsv", "jsonl", "parquet")
_EXT = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".json": "jsonl",
        ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}

Column = str | int


class DataError(DataFormatError):
    """A data file of one's own cannot be used as configured (one readable line: the file,
    the line and what is wrong)."""


@dataclasses.dataclass
class Table:
    """A file's rows. columns: names in file order, or None (header-less: positions)."""

    path: str
    columns: list | None
    rows: list[tuple[int, dict]]


def table_format(path: str, fmt: str = "") -> str:
    """`fmt`, or the format of `path` from its extension; DataError if neither says."""
    if fmt:
        if fmt not in TABLE_FORMATS:
            raise DataError(f"unknown data format {fmt!r}; choose from {', '.join(TABLE_FORMATS)}")
        return fmt
    f = _EXT.get(Path(path).suffix.lower())
    if f is None:
        raise DataError(f"{path}: cannot tell the format from the extension; set data.format "
                        f"to one of {', '.join(TABLE_FORMATS)}")
    return f


def read_table(path, fmt: str = "", header: bool = True) -> Table:
    """The rows of `path` (see the module docstring). header: whether a CSV/TSV's first row
    names the columns (JSONL and parquet always name them)."""
    path = str(path)
    fmt = table_format(path, fmt)
    try:
        if fmt == "parquet":
            return _read_parquet(path)
        text = decode_utf8(read_bytes(path), path)
    except InputError as e:
        raise DataError(str(e)) from None
    if fmt == "jsonl":
        return _read_jsonl(path, text)
    return _read_csv(path, text, fmt, header)


def _read_csv(path: str, text: str, fmt: str, header: bool) -> Table:
    reader = csv_reader(text, fmt)
    rows, columns, start = [], None, 1
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue  # blank lines (a trailing newline, spacing) are no rows
            if header and columns is None:
                columns = [c.strip() for c in cells]
                continue
            n = len(columns) if columns is not None else len(rows[0][1]) if rows else len(cells)
            if len(cells) != n:
                raise DataError(f"{path}:{line}: {len(cells)} columns, expected {n}"
                                f"{' (as in the header)' if columns else ''}"
                                f"{'; a comma inside a text must be quoted' if fmt == 'csv' else ''}")
            rec = dict(zip(columns, cells)) if columns is not None else dict(enumerate(cells))
            rows.append((line, rec))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: {e}") from None
    return Table(path, columns, rows)


def _read_jsonl(path: str, text: str) -> Table:
    rows, keys = [], {}
    for i, line in enumerate(split_lines(text)):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{i + 1}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{i + 1}: expected a JSON object, got {type(obj).__name__}")
        keys.update(dict.fromkeys(obj))
        rows.append((i + 1, obj))
    return Table(path, list(keys), rows)


def _read_parquet(path: str) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading parquet needs pyarrow: pip install 'jaxit[data]'"
                        ) from None
    if not Path(path).is_file():
        raise DataError(f"data file {path} does not exist")
    t = pq.read_table(path)
    return Table(path, list(t.column_names), [(i + 1, r) for i, r in enumerate(t.to_pylist())])


def column_ref(name: str) -> Column:
    """A field reference from a config string: a decimal is a 0-based column position."""
    name = name.strip()
    return int(name) if name.isdigit() else name


def check_columns(table: Table, refs, option: str) -> None:
    """DataError naming `option` if a referenced column is not in the table."""
    for ref in refs:
        if table.columns is None:
            if not isinstance(ref, int):
                raise DataError(f"{table.path}: {option} names column {ref!r}, but the file is "
                                "read without a header: refer to columns by 0-based position "
                                "(e.g. 1+2), or give the file a header row")
            n = len(table.rows[0][1]) if table.rows else 0
            if table.rows and not 0 <= ref < n:
                raise DataError(f"{table.path}: {option} refers to column {ref}, but the file "
                                f"has {n} columns (0..{n - 1})")
        elif isinstance(ref, int) and ref not in table.columns:
            if not 0 <= ref < len(table.columns):
                raise DataError(f"{table.path}: {option} refers to column {ref}, but the file "
                                f"has {len(table.columns)} columns")
        elif ref not in table.columns:
            raise DataError(f"{table.path}: {option} names column {ref!r}, which the file does "
                            f"not have; its columns: {', '.join(map(str, table.columns))}")


def cell(table: Table, rec: dict, ref: Column):
    """The raw value of column `ref` in record `rec` (a position in a file with a header
    counts from its first column)."""
    if isinstance(ref, int) and table.columns is not None and ref not in rec:
        return rec.get(table.columns[ref])
    return rec.get(ref)
