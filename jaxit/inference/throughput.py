"""Batched throughput of adaptive settings against the static batched model (one process).

`measure_throughput` is what `jaxit sweep` reports next to the batch-1 wall clock, and what
`experiments/bench/batched_engine.py` tabulates: the engine and the static model
(`BatchedEngine.run_static`, same buckets and batch sizes) on the same examples, each
setting interleaved with the static run `repeats` times, minimum times.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from jaxit.inference.evaluate_exits import Metric, get_metric


def measure_throughput(engine, examples: Sequence, settings: Mapping[str, tuple],
                       repeats: int = 1, labels=None, metric: str | Metric | None = None
                       ) -> dict:
    """settings: name -> (policy, eta or None). Call `engine.warmup(*policies)` first.

    Returns {"static": {...}, name: {...}} with examples/s, seconds, wall-clock and FLOPs
    speed-ups vs the static batched model and their ratio, the average exit layer, kept
    fractions, dispatch statistics, the score when labels are given, and (under "static")
    `compiles_after_warmup` (0 when every shape was compiled in `warmup`)."""
    score = None
    if labels is not None:
        mname, fn = get_metric(metric, engine.spec.is_regression)
        labels = np.asarray(labels)
        score = lambda r: {mname: fn(r.predictions, labels)}
    saved = getattr(engine, "eta", None)
    before = sum(engine.trace_counts.values())
    static, best = None, {}
    try:
        for _ in range(max(1, repeats)):
            s = engine.run_static(examples)
            static = s if static is None or s.seconds < static.seconds else static
            for name, (policy, eta) in settings.items():
                if eta is not None:
                    engine.set_eta(eta)
                r = engine.run(examples, policy)
                if name not in best or r.seconds < best[name].seconds:
                    best[name] = r
    finally:
        if saved is not None:
            engine.set_eta(saved)
    n = len(examples)
    out = {"static": {"seconds": static.seconds, "examples_per_s": n / static.seconds,
                      "batch_size": engine.bmax, "devices": engine.ndev,
                      **(score(static) if score else {})}}
    for name, r in best.items():
        wall = static.seconds / r.seconds
        out[name] = {"seconds": r.seconds, "examples_per_s": n / r.seconds,
                     "wall_speedup": wall, "flops_speedup": r.flops_speedup,
                     "wall_over_flops": wall / r.flops_speedup,
                     "avg_exit_layer": r.avg_exit_layer,
                     "kept_fraction": r.kept_fraction.tolist(), **r.stats,
                     **(score(r) if score else {})}
    out["static"]["compiles_after_warmup"] = sum(engine.trace_counts.values()) - before
    return out
