"""The 2-D sweep of a depth + width run (`jaxit.methods.depth_width`): exit threshold × η
scale on the dev split, the Pareto front of quality against FLOPs, the two single-axis
curves of the same model (exits only: η = 0; tokens only: never exit), the operating points
within tolerance, and each one timed through the batched engine. `jaxit sweep` runs this
for a run whose params hold both exit heads and CPs.

One forward per η scale gives everything the sweep needs: at λ = 1e20 the soft-mask
forward keeps exactly the tokens real dropping keeps, and every layer's exit head reads
the pooled kept tokens, so an exit rule is replayed on the host from the stored outputs
(`simulate_exits`); layer ℓ's kept count is the same whether or not the example would have
stopped earlier. FLOPs per example: `engine_results.example_flops` (layers run × tokens
kept, a head per layer run, the CP in front of every layer run), as the engine counts."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxit import flops as flops_lib
from jaxit.inference.engine_results import example_flops
from jaxit.inference.evaluate_exits import ExitTrace, get_metric, simulate_exits
from jaxit.inference.policies import NeverExit, policy_for
from jaxit.inference.sweep_grid import refine_thresholds, sweep_thresholds
from jaxit.inference.throughput import measure_throughput
from jaxit.methods.adapler import EVAL_LAMBDA, tokens_per_layer
from jaxit.methods.depth_width import depth_width_forward

DEFAULT_ETA_SCALES = (0.0, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0)
KEPT_GAP = 0.1  # η scales are added where neighbouring scales' kept fractions differ more
MAX_EXTRA_SCALES = 6  # ... at most this many (each costs one dev forward)


def next_eta_scale(kept: dict, max_gap: float = KEPT_GAP) -> float | None:
    """The η scale to add to a sweep whose scales so far keep `kept` (scale -> kept-token
    fraction without exits): the midpoint of the neighbouring pair whose kept fractions
    differ most, if by more than `max_gap`; None when the tokens-only curve has no hole."""
    scales = sorted(kept)
    gaps = [(abs(kept[b] - kept[a]), a, b) for a, b in itertools.pairwise(scales)]
    gap, a, b = max(gaps, default=(0.0, 0.0, 0.0))
    return 0.5 * (a + b) if gap > max_gap and b - a > 1e-3 else None


def hard_cut_forward(setup, pooling: str):
    """The jitted hard-cut forward (λ = 1e20) of a depth + width run: (params, batch) -> the
    `depth_width_forward` dict. η is a param, so one compilation serves every η scale."""
    enc = setup.method.encoder
    return jax.jit(lambda p, b: depth_width_forward(enc, p, b, EVAL_LAMBDA, pooling=pooling))


def depth_width_trace(setup, params, eta_scale: float, fwd):
    """(ExitTrace of every layer's outputs with the CPs at η × eta_scale, tokens [N, L] each
    layer ran on) over the dev split, each example once, in dev order; fwd:
    `hard_cut_forward(setup, pooling)`."""
    eta = jnp.asarray(params["heads"]["eta"], jnp.float32) * float(eta_scale)
    p = {**params, "heads": {**params["heads"], "eta": eta}}
    outs, ltes, labels, ntok, tpl = [], [], [], [], []
    for batch, valid in setup.eval_batches():
        keep = np.asarray(valid, bool)
        b = batch._replace(labels=None, token_targets=None)
        out = jax.device_get(fwd(p, b))
        outs.append(np.asarray(out["outputs"], np.float32)[:, keep])
        if "lte" in out:
            ltes.append(np.asarray(out["lte"], np.float32)[:, keep])
        labels.append(np.asarray(batch.labels)[keep])
        ntok.append(np.asarray(batch.attention_mask).sum(1)[keep])
        tpl.append(tokens_per_layer(out, batch.attention_mask)[keep])
    outputs = np.concatenate(outs, axis=1)
    probs = np.asarray(jax.nn.softmax(outputs, -1))
    trace = ExitTrace(outputs, probs, np.concatenate(ltes, axis=1) if ltes else None,
                      np.concatenate(labels), np.concatenate(ntok).astype(np.int64), False)
    return trace, np.concatenate(tpl)


def evaluate_point(cfg, trace: ExitTrace, tokens: np.ndarray, policy, metric: str,
                   cp_hidden: int = 32) -> dict:
    """Score, average exit layer, kept-token fraction (over the layers run) and FLOPs
    speed-up of one (η scale, exit rule) pair from its trace."""
    _, fn = get_metric(metric, False)
    exits, outs = simulate_exits(trace, policy)
    c, lte = trace.outputs.shape[-1], trace.lte is not None
    adaptive = sum(example_flops(cfg, int(n), tokens[i, :e], c, int(e), lte, cp_hidden)
                   for i, (n, e) in enumerate(zip(trace.num_tokens, exits)))
    full = sum(flops_lib.full_model_flops(cfg, int(n), c) for n in trace.num_tokens)
    run = sum(int(tokens[i, :e].sum()) for i, e in enumerate(exits))
    offered = sum(int(n) * int(e) for n, e in zip(trace.num_tokens, exits))
    return {"score": fn(outs.argmax(-1), trace.labels), "avg_exit_layer": float(exits.mean()),
            "kept_fraction": run / max(offered, 1), "flops_speedup": full / adaptive}


def pareto_front(points: Sequence[dict]) -> list[dict]:
    """The points no other point beats on both score and FLOPs speed-up, by speed-up."""
    front, best = [], -np.inf
    for p in sorted(points, key=lambda p: (-p["flops_speedup"], -p["score"])):
        if p["score"] > best:
            front.append(p)
            best = p["score"]
    return front[::-1]


def sweep_depth_width(setup, params, out_dir, policy: str = "confidence",
                      eta_scales: Sequence[float] = DEFAULT_ETA_SCALES,
                      tolerance: float = 0.01, batch_size: int = 32) -> dict:
    """Writes depth_width.json + tradeoff.png under out_dir; returns the report (module
    docstring). η scales: `eta_scales`, 0, and midpoints where neighbouring scales' kept
    fractions differ by more than KEPT_GAP (`next_eta_scale`). The reference score is the
    same model at η = 0 without exits (the full static model); operating points: the fastest within `tolerance` of it on the 2-D grid,
    on the exits-only curve and on the tokens-only curve, each timed by the batched engine
    at `batch_size` against the static batched model (0 skips the timing)."""
    from jaxit.sweep import method_pooling, pick_operating_point

    cfg = setup.method.encoder.config
    metric = setup.task.primary_metric
    pooling = method_pooling(setup)
    L = cfg.num_layers
    cp_hidden = int(np.shape(params["heads"]["cp"]["hidden"]["kernel"])[-1])
    todo = sorted({0.0, *(float(s) for s in eta_scales)})
    points, layerwise, kept, extra = [], None, {}, 0
    fwd = hard_cut_forward(setup, pooling)
    while todo:  # the given scales, then midpoints where the kept fraction jumps
        s = todo.pop(0)
        trace, tokens = depth_width_trace(setup, params, s, fwd)
        make = lambda t: policy_for(policy, t, L, False)
        thresholds = refine_thresholds(trace, make, sweep_thresholds(trace, policy),
                                       name=policy)
        if s == 0.0:
            _, fn = get_metric(metric, False)
            layerwise = [fn(trace.predictions(l), trace.labels) for l in range(1, L + 1)]
        for t in [None, *thresholds]:  # None: never exit (the tokens-only axis)
            rule = NeverExit() if t is None else make(t)
            points.append({"eta_scale": s, "threshold": t,
                           **evaluate_point(cfg, trace, tokens, rule, metric, cp_hidden)})
        kept[s] = next(p["kept_fraction"] for p in points[::-1] if p["threshold"] is None)
        if not todo and extra < MAX_EXTRA_SCALES and (s_new := next_eta_scale(kept)) is not None:
            todo, extra = [s_new], extra + 1
    scales = sorted(kept)
    full = next(p["score"] for p in points if p["eta_scale"] == 0.0 and p["threshold"] is None)
    exits_only = [p for p in points if p["eta_scale"] == 0.0]
    tokens_only = [p for p in points if p["threshold"] is None]
    # each set holds the full model (η = 0, never exit): a point always qualifies
    chosen = {f"depth+width ({policy})": pick_operating_point(points, full, tolerance),
              f"exits only ({policy}, η = 0)": pick_operating_point(exits_only, full, tolerance),
              "tokens only (never exit)": pick_operating_point(tokens_only, full, tolerance)}
    if batch_size:
        timed = _batched(setup, params, chosen, policy, batch_size)
        chosen = {k: {**v, "batched": timed[k]} for k, v in chosen.items()}
    report = {"metric": metric, "policy": policy, "num_layers": L, "eta_scales": scales,
              "trained_eta": np.asarray(params["heads"]["eta"]).tolist(),
              "full_model_score": full, "layerwise": layerwise,
              "points": points, "pareto": pareto_front(points),
              "exits_only": exits_only, "tokens_only": tokens_only,
              "operating_points": chosen, "tolerance": tolerance}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "depth_width.json").write_text(json.dumps(report, indent=2, default=float))
    plot_depth_width(report, out_dir / "tradeoff.png", title=setup.task.name)
    return report


def _batched(setup, params, chosen: dict, policy: str, batch_size: int) -> dict:
    from jaxit.sweep import dev_engine

    L = setup.method.encoder.config.num_layers
    eta = np.asarray(params["heads"]["eta"], np.float32)
    settings = {k: (NeverExit() if p["threshold"] is None else
                    policy_for(policy, p["threshold"], L, False), eta * p["eta_scale"])
                for k, p in chosen.items()}
    engine, examples = dev_engine(setup, params, batch_size)
    engine.warmup(*[p for p, _ in settings.values()])
    labels = np.asarray(setup.eval_data.labels)
    return measure_throughput(engine, examples, settings, labels=labels,
                              metric=setup.task.primary_metric)


def plot_depth_width(report: dict, path, title: str = "") -> None:
    """PNG: every (η scale, threshold) point, the Pareto front and both single-axis curves,
    score against FLOPs speed-up; the full model is a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = report["points"]
    ax.scatter([p["flops_speedup"] for p in pts], [p["score"] for p in pts], s=6,
               color="0.75", label="exit threshold × η scale")
    for key, style, label in (("pareto", "o-", "depth + width (Pareto front)"),
                              ("exits_only", "s--", "exits only (η = 0)"),
                              ("tokens_only", "^--", "tokens only (never exit)")):
        curve = sorted(report[key], key=lambda p: p["flops_speedup"])
        ax.plot([p["flops_speedup"] for p in curve], [p["score"] for p in curve], style,
                ms=3, label=label)
    full = report["full_model_score"]
    ax.plot([1.0], [full], "*", ms=14, color="k", label="full model")
    ax.axhline(full - report["tolerance"], color="k", lw=0.5, ls=":")
    ax.set_xlabel("FLOPs speed-up vs full model")
    ax.set_ylabel(report["metric"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
