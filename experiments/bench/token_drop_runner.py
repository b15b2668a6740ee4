"""Benchmark: AdapLeR inference with real token dropping at batch 1, MiniLM-L6, SST-2 dev.

    python experiments/bench/token_drop_runner.py --workdir RUN      # a trained AdapLeR run
    python experiments/bench/token_drop_runner.py [--backbone RUN] [--etas 0.5,0.8,1.0]

Reports, side by side and measured in one process (interleaved per example, min over
`repeats`), the wall-clock speed-up of the token-dropping runner (fused: one jitted call
per example; and the host loop, one round trip per layer, at two settings) over the static
full model (one jitted call, same length buckets), the FLOPs speed-up (real tokens; AdapLeR's FLOPs
include its contribution predictors) and their ratio wall/FLOPs (goal >= 0.8). Extra
columns: wall / padded FLOPs (bucket padding counted on both sides), and wall /
length-time: the speed-up predicted by the static model's own per-bucket times when every
layer runs at the bucket of its kept count — it separates the runner's overheads from the
hardware's time-vs-length curve (at batch 1 on CPU a layer costs a fixed ~0.25 ms plus a
part proportional to the tokens, so time falls more slowly than FLOPs as tokens leave).

Without a trained AdapLeR run the model is the fine-tuned backbone of `--backbone` (a
`finetune` run, default /work/runs/real/sst2_ft, phase 1 of adapler_sst2.sh) with random contribution predictors
(kernels normal(`--cp_scale`)) and hand-set η: a timing benchmark of the runner (accuracy
is then not AdapLeR's: random CPs drop useful tokens). With `--workdir`, the trained η and
`--eta_scales` multiples of it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax
import numpy as np

from jaxit.encoders import load_tokenizer, make_encoder
from jaxit.inference.buckets import load_runner_examples
from jaxit.inference.token_drop import TokenDropRunner, load_adapler_run
from jaxit.inference.token_drop_timing import compare_with_static, static_bucket_times


def random_minilm(args):
    """A MiniLM-L6-shaped BERT with random weights and random CPs, and synthetic inputs whose
    lengths follow SST-2 dev's (mean 25.2, sd 9.5, 4..55 tokens): timing anywhere, with no
    files (e.g. on an accelerator machine without the shared folder)."""
    from jaxit.encoders import EncoderConfig, init_params
    from jaxit.heads import init_exit_head
    from jaxit.methods.adapler import init_cp

    cfg = EncoderConfig("bert", 30522, 384, 6, 12, 1536, max_position_embeddings=512)
    enc = init_params(cfg, jax.random.PRNGKey(args.seed))
    cp = jax.tree.map(lambda x: x * (args.cp_scale / 0.02),
                      init_cp(jax.random.PRNGKey(args.seed + 1), 6, 384))
    params = {"encoder": enc, "heads": {"final": init_exit_head(jax.random.PRNGKey(2), 384, 2),
                                        "cp": cp, "eta": np.full(6, 0.25, np.float32)}}
    rng = np.random.default_rng(args.seed)
    n = args.num_examples or 872
    lens = np.clip(np.round(rng.normal(25.2, 9.5, n)), 4, 55).astype(int)
    examples = [(np.r_[101, rng.integers(1000, 30000, k - 2), 102].astype(np.int32), None)
                for k in lens]
    return make_encoder(cfg), params, examples


def load_model(args):
    """(encoder, params, model_dir, description, trained)."""
    if args.workdir:
        encoder, params, model_dir = load_adapler_run(args.workdir, args.checkpoint)
        return encoder, params, model_dir, f"trained AdapLeR run {args.workdir}", True
    encoder, params, model_dir = load_adapler_run(args.backbone, random_cps=args.cp_scale,
                                                  seed=args.seed)
    desc = f"fine-tuned backbone {args.backbone} + random CPs (normal({args.cp_scale}))"
    return encoder, params, model_dir, desc, False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="", help="trained AdapLeR run (load_run_params)")
    ap.add_argument("--checkpoint", default="best", help="best, latest or a step number")
    ap.add_argument("--eta_scales", default="1.0", help="trained run: η multiples to time")
    ap.add_argument("--backbone", default="/work/runs/real/sst2_ft",
                    help="without --workdir: a fine-tuned run for the encoder and head")
    ap.add_argument("--etas", default="0.5,0.6,0.7,0.8,0.9",
                    help="without --workdir: η (all layers) per operating point")
    ap.add_argument("--cp_scale", type=float, default=0.1, help="random CP kernel scale")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num_examples", type=int, default=0, help="0 = all 872")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--buckets", default="8,12,16,20,24,32,40,48,64,128",
                    help="padded lengths (both the runner and the static model)")
    ap.add_argument("--json", default="", help="also write the measurements here")
    ap.add_argument("--random_model", action="store_true",
                    help="random MiniLM-shaped weights and synthetic lengths (no files needed)")
    args = ap.parse_args(argv)

    load0 = os.getloadavg()
    if args.random_model:
        encoder, params, examples = random_minilm(args)
        labels, trained, model_dir = None, False, Path("random MiniLM-L6-shaped model")
        desc = f"random weights, random CPs (normal({args.cp_scale})), synthetic SST-2 lengths"
    else:
        encoder, params, model_dir, desc, trained = load_model(args)
        tokenizer = load_tokenizer(model_dir)
        examples, labels = load_runner_examples(tokenizer, "sst2", "dev", limit=args.num_examples)
    buckets = tuple(int(b) for b in args.buckets.split(","))
    runner = TokenDropRunner(encoder, params, 2, buckets=buckets)
    if trained:
        eta0 = runner.eta.copy()
        scales = [float(x) for x in args.eta_scales.split(",")]
        settings = {f"η = {x:g} × trained": np.minimum(eta0 * x, 10.0) for x in scales}
    else:
        settings = {f"η = {float(e):g}": float(e) for e in args.etas.split(",")}
    names = list(settings)
    settings["η = 0 (keeps all)"] = 0.0
    # the host loop (one round trip per layer) at a middle setting and at η = 0
    mid = names[len(names) // 2]
    settings[f"{mid}, host loop"] = {"eta": settings[mid], "fused": False}
    settings["η = 0, host loop"] = {"eta": 0.0, "fused": False}
    t0 = time.perf_counter()
    runner.warmup()
    warm_s = time.perf_counter() - t0
    traces = dict(runner.trace_counts)
    bucket_t = static_bucket_times(runner)
    t0 = time.perf_counter()
    m = compare_with_static(runner, examples, settings, repeats=args.repeats, labels=labels,
                            bucket_times=bucket_t)
    bench_s = time.perf_counter() - t0
    load1 = os.getloadavg()

    dev = jax.devices()[0]
    print(f"# token-dropping runner benchmark: {model_dir.name}, SST-2 dev, batch 1")
    print(f"# model: {desc}")
    print(f"# {len(examples)} examples, repeats={args.repeats} (min per example, interleaved), "
          f"buckets={runner.buckets}")
    print(f"# device: {dev.platform} ({dev.device_kind}), host: "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"jax {jax.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"# load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; after "
          f"{load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    print(f"# warm-up {warm_s:.1f}s, traces {traces}; after the benchmark {runner.trace_counts}"
          f" ({'no recompilation' if traces == runner.trace_counts else 'RECOMPILED'})")
    print("# static full model per bucket (us): "
          + ", ".join(f"{b}: {1e6 * t:.0f}" for b, t in bucket_t.items()))
    st = m["static"]
    print(f"# static full model: {st['us_per_example']:.0f} us/example, "
          f"accuracy {st.get('accuracy', float('nan')):.4f}")
    print()
    print("| setting | mode | avg tokens per layer (input → L) | accuracy | agreement | us/example "
          "| wall speed-up | FLOPs speed-up | **wall/FLOPs** | wall/padded FLOPs "
          "| length-time speed-up | wall/length-time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k in settings:
        r = m[k]
        toks = " ".join(f"{t:.1f}" for t in r["avg_tokens_per_layer"])
        mode = "fused" if r["fused"] else "host loop"
        print(f"| {k} | {mode} | {r['avg_input_tokens']:.1f} → {toks} | {r.get('accuracy', float('nan')):.4f} | "
              f"{r['agreement_with_static']:.3f} | {r['us_per_example']:.0f} | "
              f"{r['wall_speedup']:.3f} | {r['flops_speedup']:.3f} | "
              f"**{r['wall_over_flops']:.3f}** | {r['wall_over_padded_flops']:.3f} | "
              f"{r['length_time_speedup']:.3f} | {r['wall_over_length_time']:.3f} |")
    print(f"\n# benchmark wall time {bench_s:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": {k: m[k] for k in settings},
                                               "static": st, "bucket_us": {
                                                   b: 1e6 * t for b, t in bucket_t.items()},
                                               "load_before": load0, "load_after": load1,
                                               "model": desc}, indent=2, default=float))
    return m


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
