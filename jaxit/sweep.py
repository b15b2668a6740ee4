"""Exit analysis of a trained multi-exit run: layer-wise scores, threshold sweeps (quality
vs FLOPs), and batch-1 wall-clock speed-ups from the adaptive runner, all on the dev split.
This is what `jaxit sweep` and the demo run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxit.heads import has_exit_heads
from jaxit.inference.engine import BatchedEngine
from jaxit.inference.evaluate_exits import (
    ExitTrace,
    collect_layer_outputs,
    exit_report,
    measure_wallclock,
    simulate_exits,
)
from jaxit.inference.policies import REGRESSION_PATIENCE_DELTA, policy_for  # noqa: F401
from jaxit.inference.runner import EarlyExitRunner
from jaxit.inference.sweep_grid import refine_thresholds, sweep_thresholds
from jaxit.inference.throughput import measure_throughput

DEFAULT_POLICIES = ("confidence", "entropy", "patience")


def dev_trace(setup, params) -> ExitTrace:
    """Every layer's outputs on the dev split, each example once (filler rows dropped)."""

    def batches():
        for batch, valid in setup.eval_batches():
            mask = np.asarray(batch.attention_mask) * np.asarray(valid, np.int32)[:, None]
            yield batch._replace(attention_mask=mask)

    return collect_layer_outputs(setup.method.encoder, params, batches(),
                                 setup.method.is_regression, method_pooling(setup))


def method_pooling(setup) -> str:
    """The exit heads' pooling of a run ("cls" unless its config says otherwise)."""
    return str(setup.config.method.get("pooling", None) or "cls")


def dev_examples(setup, limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(input_ids, token_type_ids) of the first `limit` dev examples (real tokens only)."""
    ds = setup.eval_data
    n = min(limit, len(ds))
    return [(np.asarray(ds.input_ids[i]), np.asarray(ds.token_type_ids[i])) for i in range(n)]


def pick_operating_point(points: Sequence[dict], full_score: float, tolerance: float) -> dict:
    """The sweep point with the largest FLOPs speed-up whose score is within `tolerance`
    of the full model's (the full-depth point always qualifies)."""
    ok = [p for p in points if p["score"] >= full_score - tolerance]
    return max(ok, key=lambda p: p["flops_speedup"]) if ok else max(points,
                                                                     key=lambda p: p["score"])


def dact_full_score(trace: ExitTrace, metric) -> float:
    """The score of a DACT model's full-depth output a_L, from a trace with halting values."""
    from jaxit.inference.evaluate_exits import get_metric
    from jaxit.methods.dact import accumulate, exit_values

    y = exit_values(trace.outputs, trace.is_regression)
    a, _ = accumulate(y, trace.halting)
    a_last = np.asarray(a[-1])
    preds = a_last[:, 0] if trace.is_regression else a_last.argmax(-1)
    return get_metric(metric, trace.is_regression)[1](preds, trace.labels)


def run_sweep(setup, params, out_dir, policies: Sequence[str] = DEFAULT_POLICIES,
              tolerance: float = 0.01, wallclock_examples: int = 200, title: str = "",
              batch_size: int = 32) -> dict:
    """Writes exits.json + tradeoff.png under out_dir and returns the report, with an
    "operating_points" entry per policy (best speed-up within `tolerance` of the full
    model) timed on `wallclock_examples` dev examples by the batch-1 runner ("wallclock")
    and on the whole dev split by the batched engine at `batch_size` against the static
    batched model ("batched"; 0 skips it)."""
    cfg = setup.method.encoder.config
    trace = dev_trace(setup, params)
    metric = setup.task.primary_metric
    L = trace.num_layers
    policies = list(policies)
    if trace.halting is not None and "dact" not in policies:
        policies.append("dact")  # a DACT model: its own halting rule, next to the others
    sweeps = {}
    for name in policies:
        if name == "lte" and trace.lte is None:
            continue
        if name == "dact" and trace.halting is None:
            continue
        make = (lambda t, name=name: policy_for(name, t, L, trace.is_regression))
        if name == "dact" and not trace.is_regression:
            thresholds = [0.0]  # the halting bound has no threshold for classification
        else:  # the model's own score quantiles, refined where the average exit jumps
            thresholds = refine_thresholds(trace, make, sweep_thresholds(trace, name),
                                           name=name)
        sweeps[name] = (make, thresholds)
    report = exit_report(cfg, trace, sweeps, out_dir, metric=metric, title=title)
    full = report["full_model_score"]
    if trace.halting is not None and trace.labels is not None:
        # DACT's own full-depth output is a_L, the mix of every exit (not the last head)
        report["dact_full_score"] = dact_full_score(trace, metric)
        if "dact" in report["sweeps"]:
            report["full_model_score"] = full = report["dact_full_score"]
    chosen = {name: pick_operating_point(report["sweeps"][name], full, tolerance)
              for name in sweeps}
    wall = None
    if wallclock_examples:
        runner = EarlyExitRunner(setup.method.encoder, params, setup.method.num_outputs,
                                 setup.method.is_regression, buckets=setup_buckets(setup),
                                 pooling=method_pooling(setup))
        runner.warmup()
        examples = dev_examples(setup, wallclock_examples)
        labels = trace.labels[:len(examples)] if trace.labels is not None else None
        wall = measure_wallclock(
            runner, examples,
            {n: policy_for(n, p["threshold"], L, trace.is_regression) for n, p in chosen.items()},
            labels=labels, metric=metric)
    batched = batched_throughput(setup, params, chosen, trace, batch_size) if batch_size else None
    report["operating_points"] = {
        n: {**p, **({"wallclock": wall[n]} if wall else {}),
            **({"batched": batched[n]} if batched else {})} for n, p in chosen.items()}
    if wall:
        report["wallclock_static"] = wall["static"]
    if batched:
        report["batched_static"] = batched["static"]
    difficulty = getattr(setup.eval_data, "difficulty", None)
    if difficulty is not None and len(difficulty) == trace.outputs.shape[1]:
        report["by_difficulty"] = exits_by_difficulty(trace, np.asarray(difficulty), chosen)
        if trace.labels is not None and not trace.is_regression:
            report["layerwise_by_difficulty"] = layerwise_by_difficulty(
                trace, np.asarray(difficulty))
    Path(out_dir, "exits.json").write_text(json.dumps(report, indent=2, default=float))
    return report


def batched_throughput(setup, params, chosen: dict, trace: ExitTrace, batch_size: int) -> dict:
    """Every operating point through the batched engine on the whole dev split, against the
    static batched model at the same batch size (`measure_throughput`)."""
    L = trace.num_layers
    policies = {n: policy_for(n, p["threshold"], L, trace.is_regression)
                for n, p in chosen.items()}
    engine, examples = dev_engine(setup, params, batch_size)
    engine.warmup(*policies.values())
    return measure_throughput(engine, examples, {n: (p, None) for n, p in policies.items()},
                              labels=trace.labels, metric=setup.task.primary_metric)


def dev_engine(setup, params, batch_size: int):
    """(the batched engine for a run's params over the buckets its dev split needs, batch
    sizes 1..batch_size; the dev examples' real tokens)."""
    examples = dev_examples(setup, len(setup.eval_data))
    longest = max(ids.size for ids, _ in examples)
    buckets = setup_buckets(setup)
    fit = [b for b in buckets if b >= longest]  # no executables for lengths dev never has
    buckets = [b for b in buckets if b < longest] + fit[:1] if fit else buckets
    engine = BatchedEngine(setup.method.encoder, params, setup.method.num_outputs,
                           setup.method.is_regression, pooling=method_pooling(setup),
                           buckets=buckets, batch_sizes=sorted({1, 4, 8, 16, int(batch_size)}))
    return engine, examples


def exits_by_difficulty(trace: ExitTrace, difficulty: np.ndarray, chosen: dict) -> dict:
    """Per policy and difficulty level: average exit layer and accuracy at the chosen point."""
    out = {}
    for name, point in chosen.items():
        exits, outs = simulate_exits(trace, policy_for(name, point["threshold"], trace.num_layers,
                                                       trace.is_regression))
        preds = outs.argmax(-1) if not trace.is_regression else outs[:, 0]
        rows = {}
        for d in sorted(set(difficulty.tolist())):
            sel = difficulty == d
            row = {"n": int(sel.sum()), "avg_exit_layer": float(exits[sel].mean())}
            if trace.labels is not None and not trace.is_regression:
                row["accuracy"] = float((preds[sel] == trace.labels[sel]).mean())
            rows[int(d)] = row
        out[name] = rows
    return out


def layerwise_by_difficulty(trace: ExitTrace, difficulty: np.ndarray) -> dict:
    """Accuracy of every exit on each difficulty level: {level: [L] accuracies}."""
    correct = trace.outputs.argmax(-1) == trace.labels[None, :]  # [L, N]
    return {int(d): correct[:, difficulty == d].mean(1).tolist()
            for d in sorted(set(difficulty.tolist()))}


def setup_buckets(setup) -> tuple[int, ...]:
    from jaxit.train.pipeline import _buckets

    return _buckets(setup.config)


def sweep_checkpoint(config, workdir, which: str = "best", policies=DEFAULT_POLICIES,
                     tolerance: float = 0.01, wallclock_examples: int = 200,
                     batch_size: int = 32, eta_scales=None) -> dict:
    """`jaxit sweep`: restore a trained multi-exit run and analyse its exits. A depth +
    width run (exit heads and CPs) gets the 2-D sweep (`jaxit.depth_width_sweep`: the first
    threshold rule of `policies` × `eta_scales`)."""
    from jaxit.train.evaluate import restore_params

    setup, params = restore_params(config, workdir, which)
    if has_exit_heads(params["heads"]) and "cp" in params["heads"]:  # depth + width
        from jaxit.depth_width_sweep import DEFAULT_ETA_SCALES, sweep_depth_width

        rule = next((p for p in policies if p in ("confidence", "entropy", "lte",
                                                   "normalized_entropy")), "confidence")
        return sweep_depth_width(setup, params, Path(workdir) / "sweep", rule,
                                 eta_scales or DEFAULT_ETA_SCALES, tolerance, batch_size)
    if not has_exit_heads(params["heads"]):
        raise ValueError(f"the run in {workdir} ({config.method.name}) has no intermediate exit "
                         "heads; train an early-exit method (e.g. --config.method.name=berxit)")
    return run_sweep(setup, params, Path(workdir) / "sweep", policies, tolerance,
                     wallclock_examples, title=f"{setup.task.name} / {setup.method.name}",
                     batch_size=batch_size)

