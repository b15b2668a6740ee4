"""A trained run on a user's own text: `load_predictor(workdir)` and what `jaxit predict`
prints, one record per input, through the batched engine.

    predictor = load_predictor("runs/sst2_joint")            # the sweep's operating point
    predictor(["a gorgeous, witty film", "flat and lifeless"])
    # [{"index": 0, "label": "positive", "probabilities": {...}, "exit_layer": 2, ...}, ...]

The exit rule is, in order: the `policy`/`threshold` given; else the operating point of the
run's `jaxit sweep` with the largest FLOPs speed-up (all are within the sweep's tolerance of
the full model); else, for a run that was never swept: DACT's own halting
bound for DACT runs, confidence >= 0.9 for other multi-exit classifiers, patience 2 for
multi-exit regressors, and the full model for runs without exit heads. Token dropping uses
the trained η times `eta_scale` (default 1). When nothing exits early and no token is
dropped, the static full model runs (one fused dispatch per batch).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np

from jaxit.data.text_inputs import InputRow, check_texts, encode_texts
from jaxit.heads import has_exit_heads
from jaxit.inference.engine import BatchedEngine
from jaxit.inference.policies import NeverExit, policy_for
from jaxit.inference.trained_run import RunError, TrainedRun, load_trained_run

CHUNK = 4096  # examples per engine run (the output streams chunk by chunk)
# batch sizes a predictor compiles for (with the one given): three sizes compile in 60 % of the
# time of DEFAULT_BATCH_SIZES' five and run as fast (SST-2 dev, BUILD_NOTES)
PREDICT_BATCH_SIZES = (1, 8, 32)
POLICY_NAMES = ("never", "confidence", "entropy", "normalized_entropy", "patience", "lte",
                "elbert", "dact", "fixed")
DEFAULT_THRESHOLDS = {"confidence": 0.9, "entropy": 0.3, "normalized_entropy": 0.3,
                      "patience": 3, "lte": 0.5, "elbert": 0.5, "dact": 0.0}


@dataclasses.dataclass
class Prediction:
    """records: one dict per input, in input order; summary: totals (see `summarize`)."""

    records: list[dict]
    summary: dict


def sweep_point(run: TrainedRun) -> tuple[str | None, dict]:
    """(policy name, point) of the run's fastest `jaxit sweep` operating point, or (None, {})
    for an unswept run."""
    points = (run.sweep or {}).get("operating_points") or {}
    if not points:
        return None, {}
    name = max(points, key=lambda n: points[n].get("flops_speedup", 0.0))
    return name, points[name]


def choose_policy(run: TrainedRun, name: str | None = None, threshold=None):
    """(policy, description) for `run` (module docstring); RunError names what is wrong."""
    heads = run.heads
    has_exits = has_exit_heads(heads)
    source = "given"
    if name is None:
        swept, point = sweep_point(run)
        if swept is not None and has_exits:
            name, source = swept, "sweep operating point"
            if threshold is None:
                threshold = point["threshold"]
        else:
            source = "default for an unswept run"
            name = ("never" if not has_exits else "dact" if "halting" in heads
                    else "patience" if run.is_regression else "confidence")
            if name == "patience" and threshold is None:
                threshold = 2
    if name not in POLICY_NAMES:
        raise RunError(f"unknown policy {name!r}; choose from {', '.join(POLICY_NAMES)}")
    if name == "never":
        if threshold is not None:
            raise RunError("--threshold does not apply to --policy=never")
        return NeverExit(), f"never exit ({source})"
    if not has_exits:
        raise RunError(f"{run.path} ({run.method_name}) has no intermediate exit heads: only "
                       "--policy=never applies")
    if name == "lte" and "lte" not in heads:
        raise RunError(f"{run.path} has no learning-to-exit module (train with "
                       "--config.method.lte=True)")
    if name == "dact" and "halting" not in heads:
        raise RunError(f"{run.path} has no halting units: --policy=dact needs a DACT run")
    if name in ("confidence", "entropy", "normalized_entropy", "elbert") and run.is_regression:
        raise RunError(f"--policy={name} reads class probabilities; {run.task.name} is a "
                       "regression task (use patience, lte or dact)")
    if threshold is None:
        if name == "fixed":
            raise RunError("--policy=fixed needs --threshold=LAYER (1-based)")
        threshold = DEFAULT_THRESHOLDS[name]
        if name == "dact" and run.is_regression:
            threshold = 0.1
    if name in ("patience", "fixed"):
        threshold = int(threshold)
    try:
        policy = policy_for(name, threshold, run.num_layers, run.is_regression)
    except (TypeError, ValueError) as e:
        raise RunError(f"--policy={name} --threshold={threshold}: {e}") from None
    return policy, f"{policy!r} ({source})"


class Predictor:
    """Predictions of a trained run on raw text (module docstring). `batch_size`: rows per
    dispatch of the batched engine; `devices`: its data mesh (default: all local devices)."""

    def __init__(self, run: TrainedRun, policy: str | None = None, threshold=None,
                 eta_scale: float | None = None, batch_size: int = 32, devices=None):
        self.run = run
        self.policy, self.policy_description = choose_policy(run, policy, threshold)
        has_cp = "cp" in run.heads
        if eta_scale is not None and not has_cp:
            raise RunError(f"{run.path} ({run.method_name}) drops no tokens: --eta_scale needs "
                           "a run with contribution predictors (AdapLeR)")
        if eta_scale is not None and not (np.isfinite(eta_scale) and eta_scale >= 0):
            raise RunError(f"--eta_scale must be a number >= 0, got {eta_scale}")
        if int(batch_size) < 1:
            raise RunError(f"--batch_size must be >= 1, got {batch_size}")
        if eta_scale is None and has_cp:  # the sweep's point's η scale (depth + width), or 1
            point = sweep_point(run)[1] if policy is None else {}
            eta_scale = float(point.get("eta_scale", 1.0))
        self.eta_scale = eta_scale
        sizes = sorted({s for s in PREDICT_BATCH_SIZES if s < batch_size} | {int(batch_size)})
        self.engine = BatchedEngine(run.encoder, run.params, run.num_outputs, run.is_regression,
                                    pooling=run.pooling, buckets=run.buckets,
                                    batch_sizes=sizes, devices=devices)
        if has_cp:
            self.engine.set_eta(np.asarray(run.heads["eta"], np.float32) * self.eta_scale)
        drops = has_cp and self.eta_scale > 0
        self.static = isinstance(self.policy, NeverExit) and not drops

    def __call__(self, inputs: Sequence) -> list[dict]:
        """Records for a list of strings (or of (text_a, text_b) pairs for pair tasks)."""
        return self.predict(inputs).records

    def predict(self, inputs: Sequence, labels: Sequence | None = None,
                progress: bool = False) -> Prediction:
        """`__call__` with the summary; `labels` (names, ids or values) add the task's metric."""
        rows = [self.as_row(x) for x in inputs]
        if labels is not None:
            if len(labels) != len(rows):
                raise ValueError(f"{len(labels)} labels for {len(rows)} inputs")
            for r, y in zip(rows, labels):
                r.label = None if y is None else str(y)
        return self.predict_rows(rows, progress)

    def as_row(self, x) -> InputRow:
        """One input (a string, or a pair for pair tasks) as an InputRow."""
        n = 2 if self.run.task.is_pair else 1
        if isinstance(x, str):
            if n == 2:
                return InputRow(None, error="a pair task needs (text_a, text_b), got one string")
            return check_texts([x], 1)
        if isinstance(x, (tuple, list)) and all(isinstance(t, str) for t in x):
            if len(x) != n:
                return InputRow(None, error=f"{len(x)} texts; {self.run.task.name} takes {n}")
            return check_texts(list(x), n)
        raise TypeError(f"inputs must be strings or (text_a, text_b) pairs, got {type(x).__name__}")

    def predict_rows(self, rows: Sequence[InputRow], progress: bool = False,
                     on_chunk=None) -> Prediction:
        """Records for `rows` (error rows keep their place); `on_chunk(records)` receives each
        chunk's records in order as soon as they are ready (streaming output)."""
        start, compiled = time.perf_counter(), compile_seconds()
        bar = _bar(progress, sum(r.error is None for r in rows))
        records: list[dict] = []
        stats = _Totals()
        for s in range(0, len(rows), CHUNK):
            chunk = self._chunk(rows[s:s + CHUNK], s, stats, bar)
            records.extend(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
        if bar is not None:
            bar.close()
        stats.compile_seconds = compile_seconds() - compiled
        return Prediction(records, self.summarize(rows, records, stats,
                                                  time.perf_counter() - start))

    def _chunk(self, rows, offset: int, stats, bar) -> list[dict]:
        ok = [i for i, r in enumerate(rows) if r.error is None]
        ids, types, cut = encode_texts(self.run.tokenizer, [rows[i].texts for i in ok],
                                       self.run.max_length)
        examples = list(zip(ids, types))
        done = [0]

        def tick(k):
            if bar is not None:
                bar.update(k - done[0])
            done[0] = k

        if not examples:
            res = None
        elif self.static:
            res = self.engine.run_static(examples)
            tick(len(examples))
        else:
            res = self.engine.run(examples, self.policy, progress=tick)
        out = [{"index": offset + i, "error": r.error} for i, r in enumerate(rows)]
        for j, i in enumerate(ok):
            out[i] = {"index": offset + i, **self.record(res, j), "truncated": bool(cut[j])}
        if res is not None:
            stats.add(res, cut)
        return out

    def record(self, res, j: int) -> dict:
        """Example j of EngineResults `res` as a JSON-able dict."""
        task = self.run.task
        rec: dict = {}
        outputs = res.outputs[j]
        if task.is_regression:
            rec["value"] = float(outputs[0])
        else:
            z = outputs.astype(np.float64)
            p = np.exp(z - z.max())
            p /= p.sum()
            names = task.label_names
            rec["label"] = names[int(p.argmax())]
            rec["probabilities"] = {n: round(float(q), 6) for n, q in zip(names, p)}
        rec["exit_layer"] = int(res.exit_layers[j])
        rec["tokens"] = int(res.num_tokens[j])
        rec["tokens_per_layer"] = [int(t) for t in res.tokens_per_layer[j][:rec["exit_layer"]]]
        rec["flops"] = int(res.flops[j])
        return rec

    def summarize(self, rows: Sequence[InputRow], records: Sequence[dict], stats, seconds: float
                  ) -> dict:
        """Totals of a prediction run: counts, errors by kind, truncated texts, wall time and
        examples/s (with and without the compilation of this call; with a warm compilation
        cache it is loading, not compiling), average exit layer, kept tokens (tokens the
        layers ran on / tokens they would have run on without dropping), FLOPs speed-up, and
        the task metric where labels were given."""
        n_ok = stats.count
        out = {"inputs": len(rows), "predicted": n_ok,
               "errors": dict(Counter(r.error.split(" (")[0] for r in rows if r.error)),
               "truncated": stats.truncated, "seconds": round(seconds, 3),
               "compile_seconds": round(stats.compile_seconds, 3),
               "examples_per_second": round(n_ok / seconds, 1) if seconds > 0 else None,
               "examples_per_second_after_compile": round(
                   n_ok / (seconds - stats.compile_seconds), 1) if n_ok else None,
               "policy": self.policy_description, "static_model": self.static}
        if self.eta_scale is not None:
            out["eta_scale"] = self.eta_scale
        if n_ok:
            out["avg_exit_layer"] = round(stats.layers / n_ok, 4)
            out["kept_tokens"] = round(stats.kept / max(stats.possible, 1), 4)
            out["flops_speedup"] = round(stats.full_flops / max(stats.flops, 1), 4)
        metric = self._metric(rows, records)
        if metric:
            out.update(metric)
        return out

    def _metric(self, rows, records) -> dict | None:
        from jaxit.inference.evaluate_exits import get_metric

        task = self.run.task
        pairs = [(rec, r.label) for r, rec in zip(rows, records)
                 if r.error is None and r.label is not None and r.label.strip() != ""]
        if not pairs:
            return None
        preds, golds, unknown = [], [], 0
        for rec, y in pairs:
            gold = _label_id(task, y, self.run.config)
            if gold is None:
                unknown += 1
                continue
            golds.append(gold)
            preds.append(rec["value"] if task.is_regression else
                         task.label_names.index(rec["label"]))
        out: dict = {"labeled": len(golds)}
        if unknown:
            out["labels_not_understood"] = unknown
        if golds:
            name, fn = get_metric(task.primary_metric, task.is_regression)
            dtype = np.float32 if task.is_regression else np.int32
            out[name] = float(fn(np.asarray(preds, dtype), np.asarray(golds, dtype)))
        return out


def _label_id(task, y: str, config=None):
    """A gold label in the model's output space (`parse_label`: a class name or id, or a
    value; a custom task's labels as its files write them, with the run's label base); None
    when it is not one."""
    from jaxit.data.custom import label_id
    from jaxit.data.example import DataFormatError, parse_label

    try:
        if task.name == "custom":
            base = int((config.get("data") or {}).get("label_base", 0)) if config else 0
            return label_id(y, task, max(base, 0), "label")
        return parse_label(y, task, None, "label")
    except DataFormatError:
        return None


class _Totals:
    def __init__(self):
        self.count = self.truncated = self.layers = self.kept = self.possible = 0
        self.flops = self.full_flops = 0
        self.compile_seconds = 0.0

    def add(self, res, cut) -> None:
        self.count += len(res.exit_layers)
        self.truncated += int(np.sum(cut))
        self.layers += int(res.exit_layers.sum())
        self.kept += int(res.tokens_per_layer.sum())
        self.possible += int((res.num_tokens * res.exit_layers).sum())
        self.flops += int(res.flops.sum())
        self.full_flops += int(res.full_flops.sum())


_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_total = [0.0]
_listening = [False]


def compile_seconds() -> float:
    """Seconds this process has spent tracing, lowering and compiling (or loading from the
    persistent cache) jitted functions, from JAX's monitoring events; a running total."""
    if not _listening[0]:
        import jax

        def on_event(event: str, seconds: float, **_):
            if event in _COMPILE_EVENTS:
                _compile_total[0] += seconds

        jax.monitoring.register_event_duration_secs_listener(on_event)
        _listening[0] = True
    return _compile_total[0]


def _bar(enabled: bool, total: int):
    if not enabled or total < 256:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="predict", unit="ex", file=sys.stderr, dynamic_ncols=True)


def load_predictor(workdir, checkpoint: str | int = "best", policy: str | None = None,
                   threshold=None, eta_scale: float | None = None, batch_size: int = 32,
                   devices=None, dtype: str | None = None) -> Predictor:
    """A `Predictor` for the run in `workdir` (a `jaxit train` workdir or a `jaxit export`
    directory) at `checkpoint` ("best", "latest" or a step); `dtype` overrides the run's
    compute dtype (e.g. "bfloat16" on TPU/GPU)."""
    return Predictor(load_trained_run(workdir, checkpoint, dtype), policy, threshold, eta_scale,
                     batch_size, devices)
