"""Your own task from files, no code: `task="custom"` and the `data.*` fields of the config
(`data.train_file`, `data.dev_file`, `data.test_file`, `data.text_fields`,
`data.label_field`, `data.labels`, `data.regression`, `data.label_range`; see
`jaxit.configs.base_config`).

`data.text_fields`: "text" (one field), "question,sentence" (a pair: comma between the two
texts), "title+description" (fields joined with a space into one text; AG News), or 0-based
positions ("1+2") for files without a header. A file is read without a header exactly when
every field is given by position.

Labels: `data.labels` names the classes in id order; left empty, they are inferred from the
training file (sorted; numerically when every label is an integer) and `resolve_task`
writes them back into the config, so the run's saved config (hparams.json) holds the
mapping that eval, sweep, predict and export use. A label in a file may be a class name
(matched ignoring case and separators: "written work" = "WrittenWork") or an integer id,
0- or 1-based (`data.label_base`, -1 = decided on the training file: 1-based when it has
no 0 and has the id N). Regression (`data.regression=True`): the label is a number,
`data.label_range` "low,high" (empty = the training file's min and max, written back).
"""

from __future__ import annotations

import json
import math

from jaxit.data.example import DataFormatError, Example, label_key, parse_label
from jaxit.data.tables import DataError, Table, cell, check_columns, column_ref, read_table
from jaxit.data.tasks import TaskSpec, get_task

CUSTOM = "custom"
SPLIT_FILES = {"train": "train_file", "dev": "dev_file", "test": "test_file"}
_SPLIT_ALIASES = (("validation", "dev"), ("val", "dev"), ("valid", "dev"), ("eval", "dev"))


def parse_text_fields(spec: str) -> tuple[tuple, ...]:
    """"a+b,c" -> (("a", "b"), ("c",)): one or two texts, each one or more joined fields."""
    groups = tuple(tuple(column_ref(f) for f in g.split("+")) for g in str(spec).split(","))
    if not 1 <= len(groups) <= 2 or any(f == "" for g in groups for f in g):
        raise DataError(f"data.text_fields {spec!r}: give one field (text), a pair (a,b) or "
                        "fields joined into one text (title+description)")
    return groups


def parse_labels(value) -> tuple[str, ...]:
    """data.labels as a tuple: a comma-separated string, a JSON list string, or a list."""
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    value = str(value or "").strip()
    if not value:
        return ()
    if value.startswith("["):
        return tuple(str(v) for v in json.loads(value))
    return tuple(v.strip() for v in value.split(","))


def _labels_string(names) -> str:
    return json.dumps(list(names)) if any("," in n for n in names) else ",".join(names)


def _is_int(s: str) -> bool:
    return s.lstrip("-").isdigit()


def _raw_label(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    s = str(value).strip()
    return s or None


def is_custom(config) -> bool:
    return str(config.task).strip().lower() == CUSTOM


def _fields(d) -> tuple[tuple, ...]:
    return parse_text_fields(d.get("text_fields", "text") or "text")


def _header(d) -> bool:
    refs = [f for g in _fields(d) for f in g] + [column_ref(d.get("label_field") or "label")]
    return not all(isinstance(r, int) for r in refs)


def custom_task(d) -> TaskSpec:
    """The TaskSpec of a custom config's `data` (labels or range already resolved)."""
    groups = _fields(d)
    names = tuple("+".join(map(str, g)) for g in groups)
    if d.get("regression"):
        rng = d.get("label_range") or ""
        lo_hi = tuple(float(x) for x in str(rng).split(",")) if rng else None
        if lo_hi is not None and (len(lo_hi) != 2 or not lo_hi[0] < lo_hi[1]):
            raise DataError(f"data.label_range {rng!r}: give low,high with low < high")
        return TaskSpec(CUSTOM, names, None, ("pearson", "spearman"), ("train", "dev", "test"),
                        label_range=lo_hi, split_aliases=_SPLIT_ALIASES,
                        description="your own regression task (data.train_file, ...)")
    labels = parse_labels(d.get("labels"))
    if len(labels) < 2:
        raise DataError(f"a classification task needs at least 2 labels, data.labels gives "
                        f"{list(labels)}")
    keys = [label_key(n) for n in labels]
    if len(set(keys)) != len(keys):
        raise DataError(f"data.labels {list(labels)}: two names differ only in case or "
                        "separators")
    return TaskSpec(CUSTOM, names, labels, ("accuracy", "macro_f1"), ("train", "dev", "test"),
                    split_aliases=_SPLIT_ALIASES,
                    description="your own classification task (data.train_file, ...)")


def task_for_config(config) -> TaskSpec:
    """The task a run config names: a registered one, or its custom task (resolved)."""
    if not is_custom(config):
        return get_task(config.task)
    return custom_task(config.data)


def split_file(d, split: str) -> str:
    key = SPLIT_FILES.get(split)
    path = d.get(key, "") if key else ""
    if not path:
        raise DataError(f"task custom: no file for split {split!r}: set data."
                        f"{key or 'train_file/dev_file/test_file'}")
    return path


def _table(d, split: str) -> Table:
    return read_table(split_file(d, split), d.get("format", "") or "", _header(d))


def resolve_task(config) -> TaskSpec:
    """`task_for_config`, first inferring a custom task's labels (or regression range) and
    label base from its training file and writing them into `config.data`, so that the saved
    config holds them. Prints what it inferred."""
    if not is_custom(config):
        return get_task(config.task)
    d = config.data
    lab = column_ref(d.get("label_field") or "label")
    need_labels = not d.get("regression") and not parse_labels(d.get("labels"))
    need_range = d.get("regression") and not d.get("label_range")
    need_base = not d.get("regression") and int(d.get("label_base", -1)) < 0
    if need_labels or need_range or need_base:
        table = _table(d, "train")
        check_columns(table, [lab], "data.label_field")
        raw = [_raw_label(cell(table, rec, lab)) for _, rec in table.rows]
        raw = [r for r in raw if r is not None]
        if need_range:
            vals = [_number(r, table.path) for r in raw]
            if not vals:
                raise DataError(f"{table.path}: no labels to infer data.label_range from")
            d.label_range = f"{min(vals):g},{max(vals):g}"
            print(f"custom task: regression range {d.label_range} (from {table.path})")
        if need_labels:
            d.labels = _labels_string(infer_labels(raw, table.path))
            print(f"custom task: {len(parse_labels(d.labels))} labels from {table.path} "
                  f"(id order): {', '.join(parse_labels(d.labels))}")
        if need_base:
            d.label_base = infer_label_base(raw, parse_labels(d.labels))
    return custom_task(d)


def _number(s: str, path) -> float:
    try:
        x = float(s)
    except ValueError:
        raise DataError(f"{path}: label {s!r} is not a number (data.regression=True)") from None
    if not math.isfinite(x):
        raise DataError(f"{path}: label {s!r} is not finite")
    return x


def infer_labels(raw: list[str], path) -> tuple[str, ...]:
    """The label set of a training file: distinct values (spellings that differ only in case
    or separators are one class, named as first seen), sorted; numerically if all integers."""
    seen: dict[str, str] = {}
    for r in raw:
        seen.setdefault(label_key(r) if not _is_int(r) else r, r)
    names = list(seen.values())
    if len(names) < 2:
        raise DataError(f"{path}: the training file has {len(names)} distinct label(s) "
                        f"{names}; a classification task needs at least 2")
    if all(_is_int(n) for n in names):
        return tuple(sorted(names, key=int))
    return tuple(sorted(names, key=lambda n: (label_key(n), n)))


def infer_label_base(raw: list[str], names: tuple[str, ...]) -> int:
    """0 or 1: how integer labels in the files number the classes (0 when the names are
    themselves integers, or the file has a 0 or lacks the id N)."""
    if all(_is_int(n) for n in names):
        return 0
    ints = {int(r) for r in raw if _is_int(r)}
    return 1 if ints and 0 not in ints and len(names) in ints else 0


def label_id(raw, task: TaskSpec, base: int, at: str):
    """A raw label of a custom file as the model's id (or value); DataFormatError if it is
    none of the task's labels."""
    s = _raw_label(raw)
    if s is None:
        return None
    if task.is_regression:
        return parse_label(s, task, None, at)
    names = task.label_names
    if s in names:
        return names.index(s)
    if _is_int(s) and not all(_is_int(n) for n in names):
        i = int(s) - base
        if 0 <= i < len(names):
            return i
        raise DataFormatError(f"{at}: label id {s} is outside 0..{len(names) - 1}"
                              if base == 0 else f"{at}: label id {s} is outside 1..{len(names)}")
    return parse_label(s, task, None, at)


def load_custom_split(d, task: TaskSpec, split: str) -> tuple[list[Example], str]:
    """The examples of `split` of a custom task and the file they came from. Labels that are
    not in the label set are reported together: each unknown value and the line where it
    first occurs."""
    split = task.resolve_split(split)
    table = _table(d, split)
    groups = _fields(d)
    lab = column_ref(d.get("label_field") or "label")
    check_columns(table, [f for g in groups for f in g], "data.text_fields")
    has_label = table.columns is None or not isinstance(lab, str) or lab in table.columns
    if has_label or split == "train":
        check_columns(table, [lab], "data.label_field")
    base = max(int(d.get("label_base", 0) or 0), 0)
    examples, unknown, empty = [], {}, []
    for line, rec in table.rows:
        at = f"{table.path}:{line}"
        texts = [" ".join(str(cell(table, rec, f) or "").strip() for f in g).strip()
                 for g in groups]
        if not all(texts):
            empty.append(at)
            continue
        label = None
        if has_label:
            raw = cell(table, rec, lab)
            try:
                label = label_id(raw, task, base, at)
            except DataFormatError as e:
                unknown.setdefault(_raw_label(raw), (at, str(e)))
                continue
            if label is None and split == "train":
                unknown.setdefault("(empty)", (at, f"{at}: no label"))
                continue
        examples.append(Example(texts[0], texts[1] if len(texts) > 1 else None, label,
                                f"{split}-{line}"))
    if unknown:
        if task.is_regression:
            raise DataError(next(iter(unknown.values()))[1])
        listed = "; ".join(f"{v!r} (first at {at})" for v, (at, _) in list(unknown.items())[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise DataError(f"{table.path}: {len(unknown)} label value(s) not in the label set "
                        f"[{', '.join(task.label_names)}]: {listed}{more}")
    if empty:
        raise DataError(f"{empty[0]}: empty text in data.text_fields "
                        f"{d.get('text_fields')!r} ({len(empty)} row(s) in all)")
    return examples, table.path
