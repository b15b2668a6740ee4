"""Readers for the local (GLUE-layout) data files: TSVs, HateXplain jsonl, ERASER jsonl + docs.

TSVs are read the way GLUE files must be read: `open(encoding="utf-8-sig", newline="")`
(drops MRPC's BOM, keeps every character), split on "\\n" only (reviews contain U+0085 and
other characters `str.splitlines` would split on), a trailing "\\r" removed, fields split
on tabs with no quote handling (many sentences start with an unbalanced '"').
Texts are kept exactly as in the file (RTE train row 2164 keeps its leading space).

Each reader returns (examples, dropped) where `dropped` counts what was left out and why
("bad_rows" with on_bad_row="skip", "no_majority" for HateXplain).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from pathlib import Path

from jaxit.data.example import DataFormatError, Example, parse_label, where
from jaxit.data.tasks import LocalFile, TaskSpec


def read_text_lines(path: Path) -> list[str]:
    """The file's lines: utf-8-sig, split on "\\n" only, one trailing "\\r" removed per
    line, trailing empty lines dropped."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        text = f.read()
    lines = text.split("\n")
    lines = [ln.removesuffix("\r") for ln in lines]
    while lines and lines[-1] == "":
        lines.pop()
    return lines


class _Problems:
    """Raises on the first bad row (on_bad_row="raise") or counts them ("skip")."""

    def __init__(self, on_bad_row: str):
        if on_bad_row not in ("raise", "skip"):
            raise ValueError(f"on_bad_row must be 'raise' or 'skip', got {on_bad_row!r}")
        self.skip = on_bad_row == "skip"
        self.dropped: collections.Counter = collections.Counter()
        self.messages: list[str] = []

    def bad(self, message: str) -> None:
        if not self.skip:
            raise DataFormatError(message)
        self.dropped["bad_rows"] += 1
        if len(self.messages) < 20:
            self.messages.append(message)


def _column_index(col, header: list[str] | None, path: Path, n_cols: int) -> int:
    if header is None:
        if not isinstance(col, int) or not -n_cols <= col < n_cols:
            raise DataFormatError(f"{path}: column {col!r} does not exist in a file with "
                                  f"{n_cols} columns")
        return col % n_cols
    if col not in header:
        raise DataFormatError(f"{where(path, 1)}: header has no column {col!r}; its columns "
                              f"are {header}")
    return header.index(col)


def read_tsv(path: Path, lf: LocalFile, task: TaskSpec, split: str,
             on_bad_row: str = "raise") -> tuple[list[Example], dict]:
    """Examples from a GLUE-style TSV laid out as `lf` says (see module docstring)."""
    lines = read_text_lines(path)
    probs = _Problems(on_bad_row)
    if lf.header:
        if not lines:
            raise DataFormatError(f"{path}: empty file (expected a header line)")
        header = lines[0].split("\t")
        n_cols = len(header)
        body_start = 1
    else:
        header = None
        n_cols = lf.num_columns or (max(max(lf.text_columns), lf.label_column or 0) + 1)
        body_start = 0
    text_idx = [_column_index(c, header, path, n_cols) for c in lf.text_columns]
    if len(text_idx) != len(task.text_fields):
        raise ValueError(f"task {task.name} has {len(task.text_fields)} text field(s) but "
                         f"its file layout names {len(text_idx)} column(s)")
    label_idx = (None if lf.label_column is None
                 else _column_index(lf.label_column, header, path, n_cols))
    guid_idx = None
    if lf.guid_column is not None and (header is None or lf.guid_column in header):
        guid_idx = _column_index(lf.guid_column, header, path, n_cols)
    names = header or [f"#{i}" for i in range(n_cols)]

    examples = []
    for i in range(body_start, len(lines)):
        at = where(path, i + 1)
        line = lines[i]
        if line == "":
            probs.bad(f"{at}: empty line")
            continue
        fields = line.split("\t")
        if len(fields) != n_cols:
            probs.bad(f"{at}: expected {n_cols} tab-separated columns"
                      f"{' (as in the header)' if header else ''}, found {len(fields)}")
            continue
        texts = [fields[j] for j in text_idx]
        empty = [names[j] for j, t in zip(text_idx, texts) if not t.strip()]
        if empty:
            probs.bad(f"{at}: empty text in column {empty[0]!r}")
            continue
        try:
            label = None if label_idx is None else parse_label(
                fields[label_idx], task, lf.label_values, at)
        except DataFormatError as e:
            probs.bad(str(e))
            continue
        guid = f"{split}-{fields[guid_idx] if guid_idx is not None else i - body_start}"
        examples.append(Example(texts[0], texts[1] if len(texts) > 1 else None, label, guid))
    return examples, dict(probs.dropped)


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) for each non-empty line of a JSON-lines file."""
    for i, line in enumerate(read_text_lines(path)):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{where(path, i + 1)}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataFormatError(f"{where(path, i + 1)}: expected a JSON object, got "
                                  f"{type(obj).__name__}")
        yield i + 1, obj


def majority_label(labels: list) -> object | None:
    """The label more than half of the annotators chose, or None (no majority)."""
    if not labels:
        return None
    top, count = collections.Counter(labels).most_common(1)[0]
    return top if 2 * count > len(labels) else None


def hatexplain_annotator_labels(record: dict, at: str) -> list:
    """The annotators' labels of a HateXplain record, in either layout: the original
    (`annotators` = list of {label, annotator_id, target}) or HF datasets'
    (`annotators` = {label: [int, ...], ...}). String labels are lower-cased."""
    ann = record.get("annotators")
    if isinstance(ann, dict):
        labels = ann.get("label")
    elif isinstance(ann, list):
        labels = [a.get("label") if isinstance(a, dict) else None for a in ann]
    else:
        raise DataFormatError(f"{at}: record has no 'annotators' list; keys {sorted(record)}")
    if not isinstance(labels, list) or any(x is None for x in labels):
        raise DataFormatError(f"{at}: annotators without a 'label'")
    return [x.lower() if isinstance(x, str) else x for x in labels]


def hatexplain_text(record: dict, at: str) -> str:
    toks = record.get("post_tokens")
    if not isinstance(toks, list):
        raise DataFormatError(f"{at}: record has no 'post_tokens' list; keys {sorted(record)}")
    return " ".join(str(t) for t in toks)


def read_hatexplain(path: Path, task: TaskSpec, split: str,
                    on_bad_row: str = "raise") -> tuple[list[Example], dict]:
    """HateXplain posts: text = " ".join(post_tokens), label = the annotators' majority.
    Posts without a majority (three different labels) are dropped, as the HateXplain paper
    does, and counted in dropped["no_majority"]."""
    probs = _Problems(on_bad_row)
    examples = []
    for line, rec in iter_jsonl(path):
        at = where(path, line)
        try:
            text = hatexplain_text(rec, at)
            if not text.strip():
                raise DataFormatError(f"{at}: empty text (post_tokens is empty)")
            maj = majority_label(hatexplain_annotator_labels(rec, at))
            if maj is None:
                probs.dropped["no_majority"] += 1
                continue
            label = parse_label(maj, task, None, at)
        except DataFormatError as e:
            probs.bad(str(e))
            continue
        examples.append(Example(text, None, label, str(rec.get("post_id", f"{split}-{line}"))))
    return examples, dict(probs.dropped)


def eraser_doc_tokens(docs_dir: Path, docid: str) -> list[str]:
    """The whitespace tokens of an ERASER document, all sentences in order: evidence
    `start_token`/`end_token` index into this list (ERASER splits each line on " ")."""
    p = docs_dir / docid
    if not p.is_file():
        raise FileNotFoundError(f"ERASER document {p} not found")
    return [t for line in read_text_lines(p) for t in line.strip().split(" ") if t]


def read_eraser(path: Path, task: TaskSpec, split: str,
                on_bad_row: str = "raise") -> tuple[list[Example], dict]:
    """ERASER annotations: text = the document docs/<annotation_id> joined with spaces,
    label = `classification` (NEG/POS)."""
    probs = _Problems(on_bad_row)
    docs_dir = path.parent / "docs"
    examples = []
    for line, rec in iter_jsonl(path):
        at = where(path, line)
        try:
            docid = rec.get("annotation_id")
            if not docid:
                raise DataFormatError(f"{at}: record has no 'annotation_id'")
            text = " ".join(eraser_doc_tokens(docs_dir, docid))
            if not text.strip():
                raise DataFormatError(f"{at}: empty text (document {docs_dir / docid} is "
                                      f"empty)")
            label = parse_label(rec.get("classification"), task, None, at)
        except DataFormatError as e:
            probs.bad(str(e))
            continue
        examples.append(Example(text, None, label, str(docid)))
    return examples, dict(probs.dropped)


def read_news_csv(path: Path, lf: LocalFile, task: TaskSpec, split: str,
                  on_bad_row: str = "raise") -> tuple[list[Example], dict]:
    """The char-CNN CSVs of AG News / DBpedia as distributed: quoted CSV (commas and
    newlines inside quotes), columns label, title, text, with or without the Kaggle header
    ("Class Index,Title,Description"); the text columns are joined with a space."""
    from jaxit.data.tables import read_table

    table = read_table(path, "csv", header=False)
    rows = table.rows
    if rows and not str(rows[0][1].get(lf.label_column, "")).strip().isdigit():
        rows = rows[1:]  # the Kaggle copies' header row
    probs = _Problems(on_bad_row)
    examples = []
    for line, rec in rows:
        at = where(path, line)
        if len(rec) != lf.num_columns:
            probs.bad(f"{at}: expected {lf.num_columns} comma-separated columns (label, title, "
                      f"text), found {len(rec)}")
            continue
        text = " ".join(rec[c].strip() for c in lf.text_columns if rec[c].strip())
        if not text:
            probs.bad(f"{at}: empty title and text")
            continue
        try:
            label = parse_label(rec[lf.label_column], task, lf.label_values, at)
        except DataFormatError as e:
            probs.bad(str(e))
            continue
        examples.append(Example(text, None, label, f"{split}-{line}"))
    return examples, dict(probs.dropped)


READERS = {"news_csv": read_news_csv, "tsv": read_tsv, "hatexplain": read_hatexplain, "eraser": read_eraser}
