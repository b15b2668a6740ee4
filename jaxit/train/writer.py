"""Metric writing with clu's `MetricWriter` interface (write_scalars/write_hparams/flush):
JSON lines always, TensorBoard event files too when `tensorboardX` is installed
(`pip install tensorboardX`). clu itself needs TensorFlow for its writers, so jaxit keeps
this small writer instead."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from etils import epath

log = logging.getLogger(__name__)


class MetricWriter:
    """Appends {"step": s, name: value, ...} to `<workdir>/metrics.jsonl` per call.

    Works on local paths and `gs://` (etils.epath; the file is rewritten whole, as object
    stores cannot append; locally by an atomic rename, so a killed run leaves a whole file).
    Only process 0 of a multi-host run writes. `resume_step`: the step a resumed run
    restarts from; rows of later steps (written before the run was killed, after its last
    checkpoint) are dropped, as the run writes them again: each step appears once."""

    def __init__(self, workdir, tensorboard: bool = True, resume_step: int | None = None):
        self.dir = epath.Path(workdir)
        self.enabled = jax.process_index() == 0
        self.path = self.dir / "metrics.jsonl"
        self._rows: list[str] = []
        self._tb = None
        if not self.enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # a resumed run keeps the earlier rows
            self._rows = [r for r in self.path.read_text().split("\n") if r.strip()]
            if resume_step is not None:
                self._rows = [r for r in self._rows if json.loads(r)["step"] <= resume_step]
                _write(self.path, self._rows)
        if tensorboard and "://" not in str(workdir):
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                pass
            else:
                self._tb = SummaryWriter(str(self.dir / "tb"))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: float(np.asarray(v)) for k, v in scalars.items()}}
        self._rows.append(json.dumps(row))
        _write(self.path, self._rows)
        if self._tb is not None:
            for k, v in row.items():
                if k != "step":
                    self._tb.add_scalar(k, v, int(step))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        if self.enabled:
            _write(self.dir / "hparams.json", [json.dumps(hparams, indent=2, default=str)])

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _write(path: epath.Path, lines: list[str]) -> None:
    """Writes `lines` to `path` whole: locally via a temporary file and an atomic rename."""
    text = "\n".join(lines) + "\n" if lines else ""
    if "://" in str(path):
        path.write_text(text)
        return
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def read_metrics(workdir) -> list[dict]:
    """The rows written so far (for tests and plots)."""
    path = epath.Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
