"""Examples from a `tensorflow-datasets` data dir prepared elsewhere (array_record files),
read with `tfds.data_source` — no TensorFlow needed. Imported lazily: `pip install
'jaxit[tfds]'` (tensorflow-datasets + array_record)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from jaxit.data.example import Example
from jaxit.data.records import records_to_examples
from jaxit.data.tasks import TaskSpec


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError("source='tfds' needs tensorflow-datasets and array_record: "
                          "pip install 'jaxit[tfds]'") from e
    return tfds


def load_tfds_examples(task: TaskSpec, split: str, data_dir: str | os.PathLike | None, *,
                       tfds_name: str | None = None, tfds_split: str | None = None,
                       text_fields: Sequence[str] | None = None, label_field: str | None = None,
                       on_bad_row: str = "raise") -> tuple[list[Example], dict, str]:
    """Examples of canonical `split` from `tfds.data_source(name, split, data_dir,
    download=False)`. `tfds_name` (e.g. "glue/sst2:2.0.0") and the field names default to
    the task's tfds layout. Returns (examples, dropped counts, a description)."""
    layout = task.tfds
    name = tfds_name or (layout.name if layout else None)
    if name is None:
        raise ValueError(f"task {task.name} has no registered tfds name: pass tfds_name")
    sp = tfds_split or (layout.split_for(split) if layout else None) or split
    fields = tuple(text_fields) if text_fields else (layout.text_fields if layout
                                                      else task.text_fields)
    lab = label_field or (layout.label_field if layout else "label")
    tfds = _import_tfds()
    desc = f"tfds {name} split {sp} in {data_dir}"
    try:
        source = tfds.data_source(name, split=sp, data_dir=None if data_dir is None
                                  else os.fspath(data_dir), download=False)
    except Exception as e:
        raise FileNotFoundError(
            f"could not open {desc}: {type(e).__name__}: {e}. The data dir must hold a dataset "
            f"prepared with file_format='array_record'.") from e
    records = (source[i] for i in range(len(source)))
    examples, dropped = records_to_examples(records, task, split, fields, lab, desc, on_bad_row)
    return examples, dropped, desc
