"""`load_examples(task, split, source)`: one entry point for every data source.

Sources:
- "local":     files in the GLUE layout under `data_dir` (default `jaxit.resources.data_dir()`),
               `DATA_DIR/<task folder>/<split file>` (see `TaskSpec.local`);
- "hf":        Hugging Face `datasets` (hub id, local folder, or `data_files`);
- "tfds":      a tensorflow-datasets data dir (array_record, no TensorFlow);
- "synthetic": the generated demo task (`jaxit.data.synthetic`; task "synthetic" only).

Errors name the problem: unknown task or split (ValueError listing the known ones), a missing
split file (FileNotFoundError naming the path), a malformed row, an empty text or a label
outside the label set (`DataFormatError`, a ValueError, naming file, line and what is wrong).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from jaxit.data.example import DataFormatError, Example
from jaxit.data.local_files import READERS
from jaxit.data.tasks import TaskSpec, get_task

log = logging.getLogger(__name__)

SOURCES = ("local", "hf", "tfds", "synthetic")

__all__ = [
    "SOURCES",
    "DataFormatError",
    "Example",
    "LoadedSplit",
    "load_examples",
    "load_split",
    "local_split_path",
]


@dataclasses.dataclass
class LoadedSplit:
    """A loaded split: its examples, where they came from, and what was left out.

    dropped: counts by reason, e.g. {"no_majority": 3} (HateXplain posts whose annotators
    all disagree) or {"bad_rows": 2} (with on_bad_row="skip"); empty if nothing was.
    """

    task: TaskSpec
    split: str
    source: str
    examples: list[Example]
    origin: str
    dropped: dict

    def __len__(self) -> int:
        return len(self.examples)


def _data_dir(data_dir) -> Path:
    if data_dir is None:
        from jaxit.resources import data_dir as default

        return default()
    return Path(data_dir).expanduser()


def local_split_path(task: str | TaskSpec, split: str, data_dir=None) -> Path:
    """The file that holds `split` of `task` in the local layout. Raises FileNotFoundError
    naming the path(s) tried and the files that are there."""
    return local_split_file(task, split, data_dir)[0]


def local_split_file(task: str | TaskSpec, split: str, data_dir=None):
    """(path, LocalFile): the first of the split's layouts whose file exists (see
    `local_split_path`)."""
    task = get_task(task)
    split = task.resolve_split(split)
    if task.local is None:
        raise ValueError(f"task {task.name} has no local file layout; use source='hf' or "
                         f"'tfds'" + (" or 'synthetic'" if task.name == "synthetic" else ""))
    lfs = task.local.files_for(split)
    if not lfs:
        have = [s for s, _ in task.local.files]
        raise ValueError(f"task {task.name} has no local file for split {split!r}; local "
                         f"splits: {', '.join(have)}")
    root = _data_dir(data_dir)
    folder = root / task.local.dir
    if not folder.is_dir():
        raise FileNotFoundError(f"task folder {folder} not found (task {task.name}, data dir "
                                f"{root})")
    for lf in lfs:
        for name in lf.filenames:
            if (folder / name).is_file():
                return folder / name, lf
    tried = [str(folder / n) for lf in lfs for n in lf.filenames]
    present = sorted(p.name for p in folder.iterdir() if p.is_file())
    others = [s for s, f in task.local.files
              if s != split and any(n in present for n in f.filenames)]
    hint = f"; splits available here: {', '.join(others)}" if others else ""
    raise FileNotFoundError(f"{task.name} split {split!r}: file {' or '.join(tried)} not found "
                            f"(files in {folder}: {present}){hint}")


def load_split(task: str | TaskSpec, split: str, source: str = "local", data_dir=None, *,
               on_bad_row: str = "raise", hf_path=None, hf_config=None, data_files=None,
               text_fields=None, label_field=None, tfds_name=None, n_train: int = 4000,
               n_dev: int = 1000, seed: int = 0) -> LoadedSplit:
    """Like `load_examples`, but returns a `LoadedSplit` (examples + origin + drop counts)."""
    task = get_task(task)
    split = task.resolve_split(split)
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; sources: {', '.join(SOURCES)}")
    if task.name == "synthetic" and source in ("local", "synthetic"):
        source = "synthetic"
    if source == "synthetic":
        if task.name != "synthetic":
            raise ValueError(f"source='synthetic' only serves task 'synthetic', not {task.name}")
        from jaxit.data.synthetic import make_synthetic_task

        train, dev = make_synthetic_task(n_train, n_dev, seed=seed)
        ex = train if split == "train" else dev
        return LoadedSplit(task, split, source, ex, f"synthetic(seed={seed})", {})
    if source == "local":
        path, lf = local_split_file(task, split, data_dir)
        if lf.format in ("tsv", "news_csv"):
            ex, dropped = READERS[lf.format](path, lf, task, split, on_bad_row)
        else:
            ex, dropped = READERS[lf.format](path, task, split, on_bad_row)
        origin = str(path)
    elif source == "hf":
        from jaxit.data.hf_source import load_hf_examples

        ex, dropped, origin = load_hf_examples(
            task, split, hf_path=hf_path, hf_config=hf_config, data_files=data_files,
            text_fields=text_fields, label_field=label_field, on_bad_row=on_bad_row)
    else:
        from jaxit.data.tfds_source import load_tfds_examples

        ex, dropped, origin = load_tfds_examples(
            task, split, data_dir, tfds_name=tfds_name, text_fields=text_fields,
            label_field=label_field, on_bad_row=on_bad_row)
    if dropped:
        log.warning("%s %s from %s: left out %s", task.name, split, origin, dropped)
    return LoadedSplit(task, split, source, ex, origin, dropped)


def load_examples(task: str | TaskSpec, split: str, source: str = "local",
                  data_dir: str | os.PathLike | None = None, **kwargs) -> list[Example]:
    """The examples of `split` ("train", "dev", "test", MNLI "dev_matched", ...; aliases such
    as "validation" accepted) of `task` from `source` (see module docstring), in file order.

    data_dir:   local: the folder holding the task folders (default: the shared data dir);
                tfds: the tfds data dir; hf: not used (see hf_path / data_files).
    kwargs:     on_bad_row="raise"|"skip" (skip malformed rows, counted in the log);
                hf: hf_path, hf_config, data_files, text_fields, label_field;
                tfds: tfds_name, text_fields, label_field;
                synthetic: n_train, n_dev, seed.
    """
    return load_split(task, split, source, data_dir, **kwargs).examples
