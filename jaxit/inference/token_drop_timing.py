"""Timing AdapLeR's batch-1 token dropping against the static model in one process
(`compare_with_static`), and the static model's time per length bucket
(`static_bucket_times`), which separates the runner's overheads from how time depends on
length at batch 1."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from jaxit import flops as flops_lib
from jaxit.inference.token_drop import TokenDropRunner


def static_bucket_times(runner: TokenDropRunner, repeats: int = 20) -> dict[int, float]:
    """Wall time (s) of the static full model per length bucket (inputs of exactly the
    bucket's length), the minimum over `repeats` rounds that visit every bucket in turn
    (robust to other processes): the hardware's time-vs-length curve at batch 1."""
    ids = {b: np.full((b,), 101, np.int32) for b in runner.buckets}
    out = {b: np.inf for b in runner.buckets}
    for _ in range(repeats):
        for b in runner.buckets:
            out[b] = min(out[b], runner.run_static_one(ids[b]).seconds)
    return {b: float(t) for b, t in out.items()}


def compare_with_static(runner: TokenDropRunner, examples: Sequence,
                        settings: Mapping[str, object] | None = None, repeats: int = 1,
                        labels: Iterable | None = None,
                        bucket_times: Mapping[int, float] | None = None) -> dict:
    """Times the static full model and the token-dropping runner, for each setting (name ->
    η, a scalar or [L], or {"eta": η, "fused": bool}; default: the runner's current η and
    mode), on the same examples in one process, interleaved per example (min over
    `repeats`). `examples`: (input_ids,
    token_type_ids) pairs of real tokens; call `runner.warmup()` first.

    Per setting: wall and FLOPs speed-ups (FLOPs on real tokens) and their ratio (the goal
    metric); the FLOPs speed-up with bucket padding included ("padded"); with
    `bucket_times` (`static_bucket_times`), the "length-time" speed-up: what the static
    model's own per-bucket times predict when layer l runs at the bucket of its kept count
    (t_static(bucket) / L per layer) — it separates the runner's overheads from how time,
    unlike FLOPs, depends on length at batch 1 (fixed per-layer costs). Also average kept
    tokens per layer, accuracies when `labels` are given, and agreement with the static
    model's predictions. Restores the runner's η afterwards."""
    saved = runner.eta.copy()
    settings = dict(settings) if settings else {"eta": saved}
    etas = {}
    modes = {}
    for k, v in settings.items():
        fused = v.get("fused") if isinstance(v, Mapping) else None
        runner.set_eta(v["eta"] if isinstance(v, Mapping) else v)
        etas[k] = (runner.eta.copy(), runner._etas, runner._eta_array)
        modes[k] = runner.fused if fused is None else bool(fused)
    n_ex = len(examples)
    static_t = np.full(n_ex, np.inf)
    static_res = [None] * n_ex
    drop_t = {k: np.full(n_ex, np.inf) for k in settings}
    drop_res = {k: [None] * n_ex for k in settings}
    try:
        for i, (ids, tt) in enumerate(examples):
            for _ in range(repeats):
                r = runner.run_static_one(ids, tt)
                static_t[i], static_res[i] = min(static_t[i], r.seconds), r
                for k in settings:
                    runner.eta, runner._etas, runner._eta_array = etas[k]
                    r = runner.run_one(ids, tt, fused=modes[k])
                    drop_t[k][i], drop_res[k][i] = min(drop_t[k][i], r.seconds), r
    finally:
        runner.set_eta(saved)
    cfg, c, L = runner.config, runner.num_outputs, runner.num_layers
    static_pred = np.array([r.prediction for r in static_res])
    padded_full = sum(flops_lib.full_model_flops(cfg, runner.bucket(r.num_tokens), c,
                                                 runner.head_cost) for r in static_res)
    out = {"static": {"us_per_example": 1e6 * float(static_t.mean()),
                      "seconds": float(static_t.sum())}}
    if labels is not None:
        labels = np.asarray(list(labels))
        out["static"]["accuracy"] = float((static_pred == labels).mean())
    for k in settings:
        res = runner.collect(drop_res[k])
        wall = float(static_t.sum() / drop_t[k].sum())
        fsp = res.flops_speedup
        padded = sum(flops_lib.token_drop_flops(
            cfg, runner.bucket(r.num_tokens), [runner.bucket(int(m)) for m in r.tokens_per_layer],
            c, runner.cp_hidden, runner.head_cost) for r in res.examples)
        o = {"eta": etas[k][0].tolist(), "fused": modes[k],
             "us_per_example": 1e6 * float(drop_t[k].mean()), "seconds": float(drop_t[k].sum()),
             "wall_speedup": wall, "flops_speedup": fsp, "wall_over_flops": wall / fsp,
             "padded_flops_speedup": padded_full / padded,
             "wall_over_padded_flops": wall / (padded_full / padded),
             "avg_input_tokens": float(res.num_tokens.mean()),
             "avg_tokens_per_layer": res.tokens_per_layer.mean(0).tolist(),
             "kept_fraction_per_layer": res.kept_fraction.tolist(),
             "agreement_with_static": float((res.predictions == static_pred).mean())}
        if bucket_times:
            pred_static = sum(bucket_times[runner.bucket(r.num_tokens)] for r in res.examples)
            pred_drop = sum(bucket_times[runner.bucket(int(m))] / L
                            for r in res.examples for m in r.tokens_per_layer)
            o["length_time_speedup"] = pred_static / pred_drop
            o["wall_over_length_time"] = wall / o["length_time_speedup"]
        if labels is not None:
            o["accuracy"] = float((res.predictions == labels).mean())
        out[k] = o
    return out
