"""Metric writing with clu's `MetricWriter` interface (write_scalars/write_hparams/flush):
JSON lines always, TensorBoard event files too when `tensorboardX` is installed
(`pip install tensorboardX`). clu itself needs TensorFlow for its writers, so jaxit keeps
this small writer instead."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

log = logging.getLogger(__name__)


class MetricWriter:
    """Appends {"step": s, name: value, ...} to `<workdir>/metrics.jsonl` per call."""

    def __init__(self, workdir: str | Path, tensorboard: bool = True):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self._tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                pass
            else:
                self._tb = SummaryWriter(str(self.dir / "tb"))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        row = {"step": int(step), **{k: float(np.asarray(v)) for k, v in scalars.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k != "step":
                    self._tb.add_scalar(k, v, int(step))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        (self.dir / "hparams.json").write_text(json.dumps(hparams, indent=2, default=str))

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str | Path) -> list[dict]:
    """The rows written so far (for tests and plots)."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
