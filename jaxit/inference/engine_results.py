"""What the batched engine returns, and the per-example FLOPs account of any adaptive run."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxit import flops as flops_lib
from jaxit.encoders.config import EncoderConfig


def example_flops(cfg: EncoderConfig, n: int, tokens_per_layer: Sequence[int], num_outputs: int,
                  heads_run: int, head_extra: bool, cp_hidden: int | None,
                  head: flops_lib.HeadCost = flops_lib.BERT_HEAD) -> int:
    """Real-token FLOPs of one example that ran layers 1..len(tokens_per_layer), layer l on
    tokens_per_layer[l - 1] tokens: the embedding on n tokens, those layers, `heads_run` exit
    heads of kind `head` on the last `heads_run` layers that ran, each on its layer's tokens
    (+ the LTE or halting unit when `head_extra`), and with `cp_hidden` the contribution
    predictor in front of every layer that ran (CP 0 on the n embedded tokens). Depth only:
    `flops.early_exit_flops`; AdapLeR: `flops.token_drop_flops`; both: the sum of the parts."""
    tokens = [int(k) for k in tokens_per_layer]
    total = flops_lib.encoder_flops(cfg, tokens) if tokens else 0
    if tokens:
        total += flops_lib.embedding_flops(cfg, n) - flops_lib.embedding_flops(cfg, tokens[0])
    total += sum(flops_lib.head_flops(cfg, num_outputs, head_extra, k, head)
                 for k in (tokens[-heads_run:] if heads_run else []))
    if cp_hidden:
        total += sum(flops_lib.contribution_predictor_flops(cfg, k, cp_hidden)
                     for k in [n] + tokens[:-1])
    return int(total)


class TokenAccount:
    """Read-outs shared by results that hold outputs [N, C], flops [N], full_flops [N],
    tokens_per_layer [N, L], num_tokens [N] and is_regression."""

    @property
    def predictions(self) -> np.ndarray:
        return self.outputs[:, 0] if self.is_regression else self.outputs.argmax(-1)

    @property
    def flops_speedup(self) -> float:
        return flops_lib.speedup(self.full_flops.tolist(), self.flops.tolist())

    @property
    def kept_fraction(self) -> np.ndarray:
        """[L]: tokens each layer ran on / input tokens, summed over examples."""
        return self.tokens_per_layer.sum(0) / max(int(self.num_tokens.sum()), 1)


@dataclasses.dataclass
class EngineResults(TokenAccount):
    """Per example (input order): outputs [N, C] (logits, the value, or DACT's log a_n),
    exit_layers [N] (1-based), tokens_per_layer [N, L] (tokens layer l ran on; 0 after the
    exit), flops [N] and full_flops [N] (the static model on the same input), num_tokens [N];
    seconds: wall time of the whole run; stats: dispatch counts, padded rows, host time."""

    outputs: np.ndarray
    exit_layers: np.ndarray
    tokens_per_layer: np.ndarray
    flops: np.ndarray
    full_flops: np.ndarray
    num_tokens: np.ndarray
    is_regression: bool
    seconds: float
    stats: dict

    @property
    def avg_exit_layer(self) -> float:
        return float(self.exit_layers.mean()) if len(self.exit_layers) else 0.0

    @property
    def examples_per_second(self) -> float:
        return len(self.exit_layers) / self.seconds if self.seconds > 0 else float("inf")
