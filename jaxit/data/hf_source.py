"""Examples from Hugging Face `datasets`: a hub id (online), a local dataset folder, or local
data files (csv / tsv / json / jsonl / parquet) passed as `data_files`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from jaxit.data.example import Example
from jaxit.data.records import records_to_examples
from jaxit.data.tasks import TaskSpec

_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json",
             ".parquet": "parquet", ".arrow": "arrow"}
_DEFAULT_HF_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def _import_datasets():
    try:
        import datasets
    except ImportError as e:
        raise ImportError("source='hf' needs the Hugging Face `datasets` package: "
                          "pip install 'jaxit[data]'") from e
    return datasets


def _builder_for(files: Sequence[str]) -> tuple[str, dict]:
    exts = {Path(f).suffix.lower() for f in files}
    if len(exts) != 1 or next(iter(exts)) not in _BUILDERS:
        raise ValueError(f"cannot tell the format of data files {list(files)}: use one of "
                         f"{sorted(_BUILDERS)} (all files the same kind)")
    ext = exts.pop()
    return _BUILDERS[ext], ({"delimiter": "\t"} if ext == ".tsv" else {})


def hf_split_name(task: TaskSpec, split: str) -> str:
    """The HF split name of canonical `split` ("dev" -> "validation")."""
    if task.hf is not None:
        s = task.hf.split_for(split)
        if s is not None:
            return s
    if split in _DEFAULT_HF_SPLITS:
        return _DEFAULT_HF_SPLITS[split]
    raise ValueError(f"task {task.name} has no HF datasets split for {split!r}")


def load_hf_examples(task: TaskSpec, split: str, *, hf_path: str | os.PathLike | None = None,
                     hf_config: str | None = None,
                     data_files: str | Sequence[str] | Mapping[str, str] | None = None,
                     text_fields: Sequence[str] | None = None, label_field: str | None = None,
                     on_bad_row: str = "raise", **load_kwargs) -> tuple[list[Example], dict, str]:
    """Examples of canonical `split` through `datasets.load_dataset`:

    - `data_files` (a file, a list, or {split: file(s)} keyed by canonical or HF split names):
      local files, format from the extension (.tsv is read as tab-separated csv);
    - else `hf_path` if given: an existing file (same as `data_files`), an existing folder
      (`load_dataset(folder)`, splits from file names), or a hub id;
    - else the task's registered hub id and config (needs network, or the HF cache).

    `text_fields`/`label_field` override the task's HF field names (for your own files).
    Returns (examples, dropped counts, a description of the source).
    """
    datasets = _import_datasets()
    hf_split = hf_split_name(task, split)
    layout = task.hf
    fields = tuple(text_fields) if text_fields else (layout.text_fields if layout
                                                      else task.text_fields)
    lab = label_field or (layout.label_field if layout else "label")
    if data_files is None and hf_path is not None and Path(hf_path).is_file():
        data_files = str(hf_path)
    if data_files is not None:
        if isinstance(data_files, Mapping):
            files = {}
            for k, v in data_files.items():
                try:
                    key = hf_split_name(task, task.resolve_split(k))
                except ValueError:
                    key = k
                files[key] = v
        else:
            files = {hf_split: data_files}
        if hf_split not in files:
            raise ValueError(f"data_files has no file for split {split!r} (HF split "
                             f"{hf_split!r}); it has {sorted(files)}")
        flat = [str(f) for v in files.values() for f in ([v] if isinstance(v, (str, Path))
                                                         else v)]
        missing = [f for f in flat if not Path(f).exists()]
        if missing:
            raise FileNotFoundError(f"data file {missing[0]} not found")
        builder, extra = _builder_for(flat)
        files = {k: ([str(v)] if isinstance(v, (str, Path)) else [str(x) for x in v])
                 for k, v in files.items()}
        args, kwargs = (builder,), {"data_files": files, **extra}
        desc = f"HF {builder} files {files[hf_split]}"
    else:
        if hf_path is None and layout is None:
            raise ValueError(f"task {task.name} has no registered HF datasets id: pass hf_path "
                             f"or data_files")
        path = str(hf_path) if hf_path is not None else layout.id
        config = hf_config if hf_config is not None else (
            layout.config if layout is not None and hf_path is None else None)
        args, kwargs = ((path, config) if config else (path,)), {}
        desc = f"HF dataset {path}{'/' + config if config else ''}"
    try:
        ds = datasets.load_dataset(*args, split=hf_split, **kwargs, **load_kwargs)
    except FileNotFoundError:
        raise
    except ValueError as e:
        if "split" in str(e).lower():
            raise ValueError(f"{desc} has no split {hf_split!r} (for {task.name} split "
                             f"{split!r}): {e}") from e
        raise ValueError(f"could not load {desc}: {e}") from e
    except Exception as e:
        raise RuntimeError(
            f"could not load {desc} split {hf_split!r}: {type(e).__name__}: {e}. Offline? Pass "
            f"local files (hf_path=/data_files=) or use source='local'.") from e
    desc = f"{desc} split {hf_split}"
    examples, dropped = records_to_examples(ds, task, split, fields, lab, desc, on_bad_row)
    return examples, dropped, desc
