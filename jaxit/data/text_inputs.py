"""A user's own text for prediction: reading files (plain text, TSV/CSV with a header, JSONL)
and tokenizing them, one `InputRow` per example so that output row i is input row i.

Problems with one row (an empty line, a pair without its second text, a JSON line that is
not an object) do not stop the read: the row carries an `error` and no texts, and callers
report it in its place. Problems with the whole input (not UTF-8, a missing column, an
unknown format) raise `InputError` with one readable line.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FORMATS = ("text", "tsv", "csv", "jsonl")
_EXTENSIONS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl",
               ".ndjson": "jsonl"}


class InputError(ValueError):
    """The input as a whole cannot be read (the message says why and where)."""


@dataclasses.dataclass
class InputRow:
    """One example: texts (1 or 2 strings) or an error; label: the raw label field, if any."""

    texts: tuple[str, ...] | None
    label: str | None = None
    error: str | None = None


def guess_format(path: str) -> str:
    """The format of `path` from its extension ("text" for "-" and anything else)."""
    return _EXTENSIONS.get(Path(path).suffix.lower(), "text") if path != "-" else "text"


def read_bytes(path: str, stdin=None) -> bytes:
    """The whole input: a file, or standard input for "-"."""
    if path == "-":
        import sys

        return (stdin or sys.stdin.buffer).read()
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"input file {path} does not exist")
    if p.is_dir():
        raise InputError(f"input {path} is a directory, not a file")
    return p.read_bytes()


def decode_utf8(data: bytes, name: str) -> str:
    """`data` as text; names the line and byte of the first invalid UTF-8 sequence."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InputError(f"{name}: line {line} is not valid UTF-8 (byte 0x{data[e.start]:02x}); "
                         "convert the file, e.g. `iconv -f latin1 -t utf-8`") from None
    return text.removeprefix("\ufeff")


def parse_rows(text: str, fmt: str, num_texts: int, text_fields: Sequence[str] = (),
               label_field: str | None = None, name: str = "input") -> list[InputRow]:
    """The examples in `text`. fmt "text": one example per line, a pair's texts separated by
    a tab; "tsv"/"csv": a header row, then `text_fields` (the columns holding the texts);
    "jsonl": one JSON object per line with `text_fields` keys. num_texts: 1 or 2."""
    if fmt not in FORMATS:
        raise InputError(f"unknown input format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt != "text" and len(text_fields) != num_texts:
        raise InputError(f"--text_fields must name {num_texts} field(s) for this task, got "
                         f"{list(text_fields) or 'none'}")
    if fmt == "text":
        return [_text_row(line, num_texts) for line in _lines(text)]
    if fmt == "jsonl":
        return [_json_row(line, text_fields, label_field) for line in _lines(text)]
    return _table_rows(text, fmt, text_fields, label_field, name)


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline ends the last line; it starts no new one
    return [ln.removesuffix("\r") for ln in lines]


def check_texts(texts: Sequence[str | None], num_texts: int) -> InputRow:
    texts = [t if t is None else str(t) for t in texts]
    if not texts or texts[0] is None or not texts[0].strip():
        return InputRow(None, error="empty text")
    if num_texts == 2 and (len(texts) < 2 or texts[1] is None or not texts[1].strip()):
        return InputRow(None, error="missing the second text of the pair")
    return InputRow(tuple(texts[:num_texts]))


def _text_row(line: str, num_texts: int) -> InputRow:
    if not line.strip():
        return InputRow(None, error="empty line")
    if num_texts == 1:
        return InputRow((line,))
    parts = line.split("\t")
    if len(parts) < 2 or not parts[1].strip():
        return InputRow(None, error="missing the second text of the pair (separate the two "
                                    "texts with a tab)")
    if len(parts) > 2:
        return InputRow(None, error=f"{len(parts)} tab-separated fields; a pair has 2")
    return check_texts(parts, 2)


def _parts(field: str, columns) -> list[str]:
    """A text field's columns: "title+description" (not itself a column) joins two."""
    return [field] if field in columns or "+" not in field else field.split("+")


def _joined(field: str, record) -> str | None:
    """The text of `field` in `record` (a dict), its parts joined with a space."""
    vals = [record.get(p) for p in _parts(field, record)]
    if len(vals) == 1:
        return vals[0]
    return " ".join(str(v).strip() for v in vals if v is not None and str(v).strip()) or None


def _json_row(line: str, fields: Sequence[str], label_field) -> InputRow:
    if not line.strip():
        return InputRow(None, error="empty line")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return InputRow(None, error=f"not valid JSON ({e.msg})")
    if not isinstance(obj, dict):
        return InputRow(None, error="not a JSON object")
    missing = [p for f in fields for p in _parts(f, obj) if p not in obj]
    if missing:
        return InputRow(None, error=f"no field {missing[0]!r}")
    row = check_texts([_joined(f, obj) for f in fields], len(fields))
    if label_field is not None and row.error is None:
        row.label = None if obj.get(label_field) is None else str(obj[label_field])
    return row


def csv_reader(text: str, fmt: str):
    """A `csv.reader` over `text`: "tsv" splits on tabs with no quote handling (GLUE's TSVs:
    quotes are part of the text), "csv" is RFC 4180 (quoted commas and newlines). Its
    `line_num` is the physical line of the row last read."""
    if fmt == "tsv":
        return csv.reader(io.StringIO(text), delimiter="\t",
                          quoting=csv.QUOTE_NONE)
    return csv.reader(io.StringIO(text))


def split_lines(text: str) -> list[str]:
    """Lines of `text` split on "\\n" only (never U+0085 etc.), a trailing "\\r" removed."""
    return _lines(text)


def _table_rows(text: str, fmt: str, fields: Sequence[str], label_field, name) -> list[InputRow]:
    reader = csv_reader(text, fmt)
    try:
        header = next(reader)
    except StopIteration:
        return []
    wanted = [p for f in fields for p in _parts(f, header)] + ([label_field] if label_field
                                                               else [])
    missing = [f for f in wanted if f not in header]
    if missing:
        raise InputError(f"{name}: the header has no column {missing[0]!r} (columns: "
                         f"{', '.join(header)}); pass --text_fields")
    lab = header.index(label_field) if label_field else None
    rows = []
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                rows.append(InputRow(None, error="empty line"))
                continue
            if len(cells) < len(header):
                rows.append(InputRow(None, error=f"{len(cells)} columns; the header has "
                                                 f"{len(header)}"))
                continue
            rec = dict(zip(header, cells))
            row = check_texts([_joined(f, rec) for f in fields], len(fields))
            if lab is not None and row.error is None:
                row.label = cells[lab]
            rows.append(row)
    except csv.Error as e:
        raise InputError(f"{name}: line {reader.line_num}: {e}") from None
    return rows


def read_input(path: str, num_texts: int, fmt: str | None = None,
               text_fields: Sequence[str] = (), label_field: str | None = None,
               stdin=None) -> list[InputRow]:
    """`parse_rows` of a file or of standard input ("-"); fmt None guesses it from the
    extension."""
    fmt = fmt or guess_format(path)
    name = "<stdin>" if path == "-" else path
    return parse_rows(decode_utf8(read_bytes(path, stdin), name), fmt, num_texts, text_fields,
                      label_field, name)


def encode_texts(tokenizer, texts: Sequence[tuple[str, ...]], max_length: int
                 ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """(input_ids, token_type_ids, truncated [N] bool) of single texts or pairs, truncated
    longest-first to `max_length` (`tokenize_examples`, as training does)."""
    from jaxit.data.example import Example
    from jaxit.data.tokenize import tokenize_examples

    if not texts:
        return [], [], np.zeros((0,), bool)
    ds = tokenize_examples(tokenizer, None, [Example(t[0], t[1] if len(t) > 1 else None)
                                             for t in texts], max_length)
    return ds.input_ids, ds.token_type_ids, ds.truncated
