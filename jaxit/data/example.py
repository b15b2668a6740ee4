"""One labelled text example, the errors data loading raises, and label parsing."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from jaxit.data.tasks import TaskSpec


@dataclasses.dataclass(frozen=True)
class Example:
    """One example as read from a data source, before tokenization.

    text_a:     the (first) text.
    text_b:     the second text of a pair task, else None.
    label:      class id (int) for classification, float for regression, None if unlabeled.
    guid:       an id that names the example in its source ("dev-17", a post id, a file name).
    difficulty: synthetic task only: 0 easy, 1 medium, 2 hard; None elsewhere.
    """

    text_a: str
    text_b: str | None = None
    label: int | float | None = None
    guid: str = ""
    difficulty: int | None = None


class DataFormatError(ValueError):
    """A data file (or record) is not what its task says it should be: the message names
    the file, the line and what is wrong."""


def where(path, line: int | None) -> str:
    """'path:line' for messages (line is 1-based, as editors count)."""
    return f"{path}:{line}" if line is not None else str(path)


def label_key(name) -> str:
    """A label name compared ignoring case and separators ("Written work" = "WrittenWork")."""
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def parse_label(raw, task: TaskSpec, values: Sequence[str] | None, at: str) -> int | float | None:
    """Turns a raw label (string from a file, or int/float from a record) into a label id
    (classification) or a float (regression). `values` are the raw strings in id order (None:
    the task's label names; then a decimal string is read as an id). None / "" / -1 mean
    unlabeled and give None. A name matches ignoring case and separators. Raises
    DataFormatError, naming `at`, the label and the allowed labels, for anything else."""
    if raw is None or (isinstance(raw, str) and raw.strip() in ("", "-")):
        return None
    if task.is_regression:
        try:
            x = float(raw)
        except (TypeError, ValueError):
            raise DataFormatError(f"{at}: label {raw!r} is not a number (task {task.name} is "
                                  f"a regression)") from None
        if not math.isfinite(x):
            raise DataFormatError(f"{at}: label {raw!r} is not finite")
        if task.label_range is not None:
            lo, hi = task.label_range
            if not lo <= x <= hi:
                raise DataFormatError(f"{at}: label {x} is outside task {task.name}'s range "
                                      f"[{lo}, {hi}]")
        return x
    names = task.label_names
    if (isinstance(raw, str) and values is None and raw.strip().lstrip("-").isdigit()
            and raw.strip() not in names):
        raw = int(raw.strip())  # an id written as text (e.g. HF json/csv with mixed types)
    if hasattr(raw, "dtype") and getattr(raw, "ndim", 1) == 0:
        raw = raw.item()  # numpy scalar
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, int):
        i = int(raw)
        if i == -1:
            return None
        if 0 <= i < len(names):
            return i
        raise DataFormatError(f"{at}: label id {i} is outside the label set of task "
                              f"{task.name}: ids 0..{len(names) - 1} = {list(names)}")
    s = str(raw).strip()
    allowed = list(values) if values is not None else list(names)
    if s in allowed:
        return allowed.index(s)
    if values is not None and s in names:  # e.g. an HF export that writes label names
        return list(names).index(s)
    keys = [label_key(n) for n in names]
    if label_key(s) and keys.count(label_key(s)) == 1:  # "written work" = "WrittenWork"
        return keys.index(label_key(s))
    raise DataFormatError(f"{at}: label {s!r} is not in the label set of task {task.name}: "
                          f"allowed labels {allowed}")
