"""Evaluating early exit: layer-wise scores, threshold sweeps (quality vs efficiency),
wall-clock vs FLOPs speed-ups, JSON + PNG reports.

Exit decisions depend only on per-layer exit outputs, so quality and FLOPs of any policy
are simulated exactly from `collect_layer_outputs` (one batched forward pass over the
data, every layer's outputs kept). Wall clock needs the real runner
(`measure_wallclock`), timed against the static full model in the same process.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from jaxit import flops as flops_lib
from jaxit.batch import Batch
from jaxit.encoders.config import EncoderConfig
from jaxit.encoders.transformer import Encoder
from jaxit.heads import head_cost
from jaxit.inference.policies import ExitPolicy, LayerOutput
from jaxit.methods.early_exit import all_layer_outputs
from jaxit.metrics import accuracy, f1, macro_f1, mcc, pearson, spearman

Metric = Callable[[np.ndarray, np.ndarray], float]


# ----------------------------------------------------------------------------- metrics


METRICS: dict[str, Metric] = {"accuracy": accuracy, "f1": f1, "macro_f1": macro_f1,
                              "mcc": mcc, "pearson": pearson, "spearman": spearman}


def get_metric(metric: str | Metric | None, is_regression: bool) -> tuple[str, Metric]:
    """(name, fn(predictions, labels) -> float): a name from `jaxit.metrics` or a callable;
    default accuracy (classification) / Pearson (regression)."""
    if metric is None:
        metric = "pearson" if is_regression else "accuracy"
    if callable(metric):
        return getattr(metric, "__name__", "score"), metric
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
    return metric, METRICS[metric]


# ----------------------------------------------------------------------------- collecting


class ExitTrace(NamedTuple):
    """Every layer's exit outputs over a data set (host numpy arrays).

    outputs [L, N, C]; probs [L, N, C] (None for regression); lte [L, N] or None;
    labels [N] or None; num_tokens [N] (real tokens, for FLOPs); halting [L, N] (DACT
    halting values) or None; head: the exit heads' FLOPs descriptor.
    """

    outputs: np.ndarray
    probs: np.ndarray | None
    lte: np.ndarray | None
    labels: np.ndarray | None
    num_tokens: np.ndarray
    is_regression: bool
    halting: np.ndarray | None = None
    head: flops_lib.HeadCost = flops_lib.BERT_HEAD

    @property
    def num_layers(self) -> int:
        return self.outputs.shape[0]

    def layer_output(self, layer: int, i: int) -> LayerOutput:
        """Example i's `LayerOutput` at layer `layer` (1-based), as the runner builds it."""
        l = layer - 1
        return LayerOutput(self.outputs[l, i], None if self.probs is None else self.probs[l, i],
                           None if self.lte is None else float(self.lte[l, i]),
                           None if self.halting is None else float(self.halting[l, i]))

    def predictions(self, layer: int) -> np.ndarray:
        out = self.outputs[layer - 1]
        return out[:, 0] if self.is_regression else out.argmax(-1)


def collect_layer_outputs(encoder: Encoder, params: dict, batches: Iterable[Batch],
                          is_regression: bool, pooling: str = "cls") -> ExitTrace:
    """Runs `all_layer_outputs` (jitted) over `batches`; rows without any real token (batch
    padding) are dropped."""

    @jax.jit
    def fwd(p, b):
        out = all_layer_outputs(encoder, p, b, pooling=pooling)
        probs = None if is_regression else jax.nn.softmax(out.outputs.astype(np.float32), -1)
        return out.outputs.astype(np.float32), probs, out.lte, out.halting

    outs, probs, ltes, halts, labels, ntok = [], [], [], [], [], []
    for b in batches:
        mask = np.asarray(b.attention_mask)
        keep = mask.sum(1) > 0
        o, p, u, h = jax.device_get(fwd(params, Batch(*(np.asarray(x) for x in b[:3]))))
        outs.append(o[:, keep])
        if p is not None:
            probs.append(p[:, keep])
        if u is not None:
            ltes.append(u[:, keep])
        if h is not None:
            halts.append(h[:, keep])
        if b.labels is not None:
            labels.append(np.asarray(b.labels)[keep])
        ntok.append(mask.sum(1)[keep])
    cat = lambda xs: np.concatenate(xs, axis=1) if xs else None
    return ExitTrace(cat(outs), cat(probs), cat(ltes),
                     np.concatenate(labels) if labels else None,
                     np.concatenate(ntok).astype(np.int64), is_regression, cat(halts),
                     head_cost(params["heads"]["final"], pooling))


# ----------------------------------------------------------------------------- simulating


def simulate_exits(trace: ExitTrace, policy: ExitPolicy) -> tuple[np.ndarray, np.ndarray]:
    """(exit layers [N] 1-based, outputs at the exit [N, C]): the runner's decisions, from
    stored per-layer outputs. A policy with an `answer()` (DACT) supplies the outputs."""
    L, n = trace.num_layers, trace.outputs.shape[1]
    exits = np.empty(n, np.int32)
    outputs = trace.outputs[-1].copy()
    answer = getattr(policy, "answer", None)
    for i in range(n):
        policy.reset()
        layer = L
        for l in range(1, L + 1):
            if policy.update(l, trace.layer_output(l, i)):
                layer = l
                break
        exits[i] = layer
        outputs[i] = trace.outputs[layer - 1, i] if answer is None else answer()
    return exits, outputs


def _preds(outputs: np.ndarray, is_regression: bool) -> np.ndarray:
    return outputs[:, 0] if is_regression else outputs.argmax(-1)


def layerwise_scores(trace: ExitTrace, metric: str | Metric | None = None) -> list[float]:
    """Score when every example is forced to exit at layer l, for l = 1..L."""
    _, fn = get_metric(metric, trace.is_regression)
    return [fn(trace.predictions(l), trace.labels) for l in range(1, trace.num_layers + 1)]


def exit_flops(cfg: EncoderConfig, trace: ExitTrace, exits: np.ndarray) -> tuple[int, int]:
    """(adaptive FLOPs, static full-model FLOPs), summed over examples."""
    c = trace.outputs.shape[-1]
    lte = trace.lte is not None or trace.halting is not None  # a D->1 unit per layer
    adaptive = sum(flops_lib.early_exit_flops(cfg, int(n), int(e), c, lte, trace.head)
                   for n, e in zip(trace.num_tokens, exits))
    full = sum(flops_lib.full_model_flops(cfg, int(n), c, trace.head) for n in trace.num_tokens)
    return adaptive, full


def evaluate_policy(cfg: EncoderConfig, trace: ExitTrace, policy: ExitPolicy,
                    metric: str | Metric | None = None) -> dict:
    """Score, average exit layer, exit histogram and FLOPs speed-up of one policy."""
    name, fn = get_metric(metric, trace.is_regression)
    exits, outs = simulate_exits(trace, policy)
    adaptive, full = exit_flops(cfg, trace, exits)
    hist = np.bincount(exits, minlength=trace.num_layers + 1)[1:]
    result = {
        "policy": repr(policy), "avg_exit_layer": float(exits.mean()),
        "layer_speedup": trace.num_layers / float(exits.mean()),
        "flops_speedup": full / adaptive, "exit_histogram": hist.tolist(),
    }
    if trace.labels is not None:
        result[name] = result["score"] = fn(_preds(outs, trace.is_regression), trace.labels)
    return result


def threshold_sweep(cfg: EncoderConfig, trace: ExitTrace,
                    make_policy: Callable[[float], ExitPolicy], thresholds: Sequence[float],
                    metric: str | Metric | None = None) -> list[dict]:
    """`evaluate_policy` for each threshold (a quality-efficiency trade-off curve)."""
    points = []
    for t in thresholds:
        point = evaluate_policy(cfg, trace, make_policy(t), metric)
        point["threshold"] = float(t)
        points.append(point)
    return points


# ----------------------------------------------------------------------------- wall clock


def measure_wallclock(runner, examples: Sequence, policies: Mapping[str, ExitPolicy],
                      repeats: int = 1, labels=None, metric: str | Metric | None = None,
                      run_options: Mapping[str, dict] | None = None) -> dict:
    """Times the static full model and each policy's adaptive run on the same examples in
    the same process, interleaved per example (min over `repeats` per example, which
    discounts interruptions by other processes). `examples`: (input_ids, token_type_ids)
    pairs of real tokens; `runner.warmup()` first; `run_options[name]`: keyword arguments
    of `runner.run_one` for that policy (e.g. {"fused": False}). Returns per policy: wall and FLOPs
    speed-ups vs the static model (FLOPs on real tokens, and as executed with bucket
    padding), their ratios, the average exit layer and the score when labels are given."""
    name, fn = get_metric(metric, runner.is_regression)
    static_t = np.full(len(examples), np.inf)
    ad_t = {k: np.full(len(examples), np.inf) for k in policies}
    ad_res = {k: [None] * len(examples) for k in policies}
    static_res = [None] * len(examples)
    for i, (ids, tt) in enumerate(examples):
        for _ in range(repeats):
            r = runner.run_static_one(ids, tt)
            static_t[i] = min(static_t[i], r.seconds)
            static_res[i] = r
            for k, pol in policies.items():
                r = runner.run_one(ids, tt, pol, **(run_options or {}).get(k, {}))
                ad_t[k][i] = min(ad_t[k][i], r.seconds)
                ad_res[k][i] = r
    full_flops = sum(r.flops for r in static_res)
    cfg, c = runner.config, runner.num_outputs
    buckets = [runner.bucket(r.num_tokens) for r in static_res]
    head = getattr(runner, "head_cost", flops_lib.BERT_HEAD)
    padded_full = sum(flops_lib.full_model_flops(cfg, b, c, head) for b in buckets)
    L = runner.num_layers
    out = {"static": {"seconds": float(static_t.sum()), "flops": int(full_flops),
                      "us_per_example": 1e6 * float(static_t.mean())}}
    if labels is not None:
        out["static"][name] = fn(np.array([r.prediction for r in static_res]), labels)
    for k in policies:
        res = ad_res[k]
        fl = sum(r.flops for r in res)
        wall = float(static_t.sum() / ad_t[k].sum())
        fsp = full_flops / fl
        layers = np.array([r.exit_layer for r in res])
        unit = runner.has_lte or getattr(runner, "has_halting", False)
        padded = sum(flops_lib.early_exit_flops(cfg, b, int(r.exit_layer), c, unit, head)
                     for b, r in zip(buckets, res))
        out[k] = {
            "seconds": float(ad_t[k].sum()), "flops": int(fl),
            "us_per_example": 1e6 * float(ad_t[k].mean()),
            "avg_exit_layer": float(layers.mean()), "wall_speedup": wall,
            "flops_speedup": float(fsp), "wall_over_flops": wall / fsp,
            # the FLOPs actually executed, padding included: isolates the runner's own
            # overheads from the length-bucket padding that both models pay
            "padded_flops_speedup": padded_full / padded,
            "wall_over_padded_flops": wall / (padded_full / padded),
            # the speed-up if each example's static time shrank in proportion to its layers
            # (exit_layer / L): separates the runner's overheads from how time, unlike
            # FLOPs, depends on length (fixed per-layer costs, bucket padding)
            "layer_time_speedup": float(static_t.sum() / (static_t * layers / L).sum()),
        }
        out[k]["wall_over_layer_time"] = wall / out[k]["layer_time_speedup"]
        if labels is not None:
            out[k][name] = fn(np.array([r.prediction for r in res]), labels)
    return out


# ----------------------------------------------------------------------------- reports


def plot_tradeoff(curves: Mapping[str, Sequence[dict]], path, full_score: float | None = None,
                  num_layers: int | None = None, layerwise: Mapping[str, Sequence[float]] | None = None,
                  title: str = "", metric_name: str = "score") -> None:
    """PNG: score vs average exit layer and vs FLOPs speed-up, one line per curve; the
    static full model is a star (exit layer L, speed-up 1); optional layer-wise curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, pts in curves.items():
        pts = [p for p in pts if "score" in p]
        if not pts:
            continue
        pts_l = sorted(pts, key=lambda p: p["avg_exit_layer"])
        ax1.plot([p["avg_exit_layer"] for p in pts_l], [p["score"] for p in pts_l], "o-",
                 ms=3, label=name)
        pts_f = sorted(pts, key=lambda p: p["flops_speedup"])
        ax2.plot([p["flops_speedup"] for p in pts_f], [p["score"] for p in pts_f], "o-",
                 ms=3, label=name)
    for name, scores in (layerwise or {}).items():
        ax1.plot(range(1, len(scores) + 1), scores, "s--", ms=3, alpha=0.7,
                 label=f"{name} (layer-wise)")
    if full_score is not None:
        if num_layers:
            ax1.plot([num_layers], [full_score], "*", ms=14, color="k", label="full model")
        ax2.plot([1.0], [full_score], "*", ms=14, color="k", label="full model")
    ax1.set_xlabel("average exit layer")
    ax2.set_xlabel("FLOPs speed-up vs full model")
    for ax in (ax1, ax2):
        ax.set_ylabel(metric_name)
        ax.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def default_thresholds(policy: str) -> list[float]:
    """Sweeps that span "exit at once" to "never exit" for each rule."""
    if policy == "confidence":
        return [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 0.999, 1.01]
    if policy == "entropy":
        return [0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 1e9]
    if policy in ("normalized_entropy", "elbert"):
        return [round(0.1 * i, 1) for i in range(11)]
    if policy == "lte":
        return [1.01, 0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.0]
    if policy == "patience":
        return [0, 1, 2, 3, 4, 5, 6]
    if policy == "dact":  # regression tolerance on |a_L - a_n| (classification: unused)
        return [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
    raise ValueError(f"no default thresholds for policy {policy!r}")


def exit_report(cfg: EncoderConfig, trace: ExitTrace, sweeps: Mapping[str, tuple],
                out_dir, metric: str | Metric | None = None, title: str = "",
                wallclock: dict | None = None) -> dict:
    """Layer-wise scores + one sweep per entry of `sweeps` (name -> (make_policy,
    thresholds)); writes `exits.json` and `tradeoff.png` under `out_dir`."""
    name, _ = get_metric(metric, trace.is_regression)
    report = {"metric": name, "num_layers": trace.num_layers,
              "num_examples": int(trace.outputs.shape[1])}
    if trace.labels is not None:
        report["layerwise"] = layerwise_scores(trace, metric)
        report["full_model_score"] = report["layerwise"][-1]
    report["sweeps"] = {k: threshold_sweep(cfg, trace, mk, th, metric)
                        for k, (mk, th) in sweeps.items()}
    if wallclock is not None:
        report["wallclock"] = wallclock
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "exits.json").write_text(json.dumps(report, indent=2, default=float))
    if trace.labels is not None:
        plot_tradeoff(report["sweeps"], out_dir / "tradeoff.png", report["full_model_score"],
                      trace.num_layers, {"forced exit": report["layerwise"]}, title, name)
    return report
