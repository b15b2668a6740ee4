"""Turning dict records (HF `datasets` rows, tfds examples) into `Example`s."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from jaxit.data.example import DataFormatError, Example, parse_label
from jaxit.data.local_files import hatexplain_annotator_labels, hatexplain_text, majority_label
from jaxit.data.tasks import TaskSpec


def _as_text(value, field: str, at: str) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    elif hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy bytes/str
        return _as_text(value.item(), field, at)
    if isinstance(value, (list, tuple)):  # pre-tokenized text
        value = " ".join(_as_text(v, field, at) for v in value)
    if not isinstance(value, str):
        raise DataFormatError(f"{at}: field {field!r} is {type(value).__name__}, not text")
    return value


def records_to_examples(records: Iterable[dict], task: TaskSpec, split: str,
                        text_fields: Sequence[str], label_field: str | None, source: str,
                        on_bad_row: str = "raise") -> tuple[list[Example], dict]:
    """Examples from dict records. `source` names where they come from in messages
    ("HF dataset nyu-mll/glue/sst2 split validation"); record i is reported as `source`
    row i. HateXplain records get the majority label over annotators (no majority: dropped
    and counted); list-valued text fields are joined with spaces; a label of -1 (HF test
    sets) means unlabeled."""
    if on_bad_row not in ("raise", "skip"):
        raise ValueError(f"on_bad_row must be 'raise' or 'skip', got {on_bad_row!r}")
    if len(text_fields) != len(task.text_fields):
        raise ValueError(f"task {task.name} needs {len(task.text_fields)} text field(s), got "
                         f"{list(text_fields)}")
    dropped: dict[str, int] = {}
    examples = []
    for i, rec in enumerate(records):
        at = f"{source} row {i}"
        try:
            missing = [f for f in (*text_fields, label_field) if f is not None and f not in rec]
            if missing:
                raise DataFormatError(f"{at}: no field {missing[0]!r}; the record has fields "
                                      f"{sorted(rec)}")
            if task.name == "hatexplain" and label_field == "annotators":
                text = hatexplain_text(rec, at)
                maj = majority_label(hatexplain_annotator_labels(rec, at))
                if maj is None:
                    dropped["no_majority"] = dropped.get("no_majority", 0) + 1
                    continue
                texts = [text]
                label = parse_label(maj, task, None, at)
            else:
                texts = [_as_text(rec[f], f, at) for f in text_fields]
                label = None if label_field is None else parse_label(rec[label_field], task,
                                                                     None, at)
            for f, t in zip(text_fields, texts):
                if not t.strip():
                    raise DataFormatError(f"{at}: empty text in field {f!r}")
        except DataFormatError:
            if on_bad_row == "raise":
                raise
            dropped["bad_rows"] = dropped.get("bad_rows", 0) + 1
            continue
        guid_val = rec.get("idx", rec.get("id", rec.get("post_id", i)))
        if hasattr(guid_val, "item"):
            guid_val = guid_val.item()
        if isinstance(guid_val, bytes):
            guid_val = guid_val.decode("utf-8", "replace")
        examples.append(Example(texts[0], texts[1] if len(texts) > 1 else None, label,
                                f"{split}-{guid_val}"))
    return examples, dropped
