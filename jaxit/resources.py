"""Where the offline evaluation data and pretrained weights live (read in place, never copied).

`JAXIT_SHARED` points at the shared folder; by default it is `../shared` next to the
repository root (or next to the current directory).
"""

from __future__ import annotations

import os
from pathlib import Path

MINILM = "all-MiniLM-L6-v2"


def shared_dir() -> Path:
    env = os.environ.get("JAXIT_SHARED")
    if env:
        return Path(env).expanduser().resolve()
    for base in (Path(__file__).resolve().parents[1], Path.cwd()):
        cand = (base / ".." / "shared").resolve()
        if cand.is_dir():
            return cand
    return (Path.cwd() / ".." / "shared").resolve()


def data_dir() -> Path:
    return shared_dir() / "data"


def model_dir(name: str = MINILM) -> Path:
    return shared_dir() / "models" / name
