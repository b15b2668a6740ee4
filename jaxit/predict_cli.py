"""`jaxit predict`: a trained run on a file of text, one JSON line out per line in (the
logic; flags are in `jaxit.cli`)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxit.data.text_inputs import guess_format, read_input
from jaxit.inference.predictor import load_predictor


def run_predict(workdir: str, input_path: str, output: str | None = None,
                checkpoint: str = "best", fmt: str | None = None,
                text_fields: Sequence[str] | None = None, label_field: str | None = None,
                policy: str | None = None, threshold: float | None = None,
                eta_scale: float | None = None, batch_size: int = 32,
                summary_path: str | None = None, dtype: str | None = None) -> dict:
    """Predicts every example of `input_path` ("-" = stdin) with the run in `workdir`; writes
    one JSON record per example, in input order, to `output` (None = stdout), streamed chunk
    by chunk, and the summary to stderr. `dtype` overrides the run's compute dtype. Returns
    the summary."""
    from jaxit.data.custom import task_for_config
    from jaxit.inference.trained_run import run_config

    task = task_for_config(run_config(workdir))  # the input is read (and checked) first
    fmt = fmt or guess_format(input_path)
    fields = list(text_fields or (task.text_fields if fmt != "text" else ()))
    rows = read_input(input_path, 2 if task.is_pair else 1, fmt, fields, label_field)
    enable_compilation_cache()
    predictor = load_predictor(workdir, checkpoint, policy, threshold, eta_scale, batch_size,
                               dtype=dtype)
    out = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        def write(records):
            out.write("".join(json.dumps(r) + "\n" for r in records))
            out.flush()

        result = predictor.predict_rows(rows, progress=True, on_chunk=write)
    finally:
        if output:
            out.close()
    summary = result.summary
    print(format_summary(summary, predictor.run.num_layers), file=sys.stderr)
    if summary_path:
        with open(summary_path, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    return summary


def format_summary(s: dict, num_layers: int) -> str:
    """The summary as a few readable lines."""
    errors = sum(s["errors"].values())
    lines = [(f"jaxit predict: {s['inputs']} inputs, {s['predicted']} predicted, {errors} "
             f"not predicted, {s['truncated']} truncated to the model's maximum length")]
    lines += [f"  {n} x {kind}" for kind, n in s["errors"].items()]
    lines.append(f"  policy: {s['policy']}" + (f", eta scale {s['eta_scale']}"
                                               if "eta_scale" in s else ""))
    if s["predicted"]:
        lines.append(f"  {s['examples_per_second']} examples/s in all ({s['seconds']} s, of "
                     f"which {s['compile_seconds']} s compiling); "
                     f"{s['examples_per_second_after_compile']} examples/s after compilation")
        lines.append(f"  average exit layer {s['avg_exit_layer']:.2f} of {num_layers}; kept "
                     f"tokens {100 * s['kept_tokens']:.1f} %; FLOPs speed-up "
                     f"{s['flops_speedup']:.2f}x")
    metric = next((k for k in ("accuracy", "pearson", "f1", "macro_f1", "mcc", "spearman")
                   if k in s), None)
    if metric:
        lines.append(f"  {metric} {s[metric]:.4f} on {s['labeled']} labeled inputs")
    if s.get("labels_not_understood"):
        lines.append(f"  {s['labels_not_understood']} labels not understood (not scored)")
    return "\n".join(lines)


def enable_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache in $JAXIT_CACHE_DIR (default
    ~/.cache/jaxit/xla; "off" disables it), so that a second `jaxit predict` with the same
    run and shapes loads its executables instead of compiling them. Returns the folder."""
    import jax

    folder = os.environ.get("JAXIT_CACHE_DIR", str(Path.home() / ".cache" / "jaxit" / "xla"))
    if folder.strip().lower() in ("", "0", "off", "none", "false"):
        return None
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
