"""Builds a `Method` from the `method` block of a run config."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from jaxit.encoders.transformer import Encoder
from jaxit.errors import UnknownNameError, did_you_mean
from jaxit.methods.adapler import build_adapler
from jaxit.methods.base import Method
from jaxit.methods.dact import build_dact
from jaxit.methods.depth_width import build_depth_width
from jaxit.methods.early_exit import ALIASES as _EARLY_EXIT_NAMES
from jaxit.methods.early_exit import build_early_exit
from jaxit.methods.finetune import make_finetune

# name -> builder(method_cfg, encoder, num_outputs, is_regression, num_steps) -> Method;
# a builder with a `steps_per_epoch` keyword also gets that (AdapLeR's λ grows per epoch).
_BUILDERS: dict[str, Callable[..., Method]] = {
    "finetune": lambda mcfg, enc, n_out, is_reg, num_steps: make_finetune(
        enc, n_out, is_reg, pooling=(mcfg.get("pooling", None) or "cls")),
    "dact": build_dact,
    "adapler": build_adapler,
    "depth_width": build_depth_width,
}


# Multi-exit models (DeeBERT, PABEE, BERxiT, ELBERT): one builder; `strategy` picks the loss.
for _name in _EARLY_EXIT_NAMES:
    _BUILDERS[_name] = build_early_exit


def register(name: str, builder: Callable[..., Method]) -> None:
    _BUILDERS[name] = builder


def method_names() -> tuple[str, ...]:
    return tuple(sorted(_BUILDERS))


def make_method(mcfg, encoder: Encoder, num_outputs: int, is_regression: bool,
                num_steps: int, steps_per_epoch: int | None = None) -> Method:
    """`mcfg.name` picks the method; the rest of `mcfg` is its options."""
    name = mcfg.name
    if name not in _BUILDERS:
        raise UnknownNameError(f"unknown method {name!r}{did_you_mean(name, method_names())}; "
                               f"known methods: {', '.join(method_names())}")
    builder = _BUILDERS[name]
    try:
        takes_spe = "steps_per_epoch" in inspect.signature(builder).parameters
    except (TypeError, ValueError):
        takes_spe = False
    if takes_spe:
        return builder(mcfg, encoder, num_outputs, is_regression, num_steps,
                       steps_per_epoch=steps_per_epoch)
    return builder(mcfg, encoder, num_outputs, is_regression, num_steps)
