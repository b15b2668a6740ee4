"""Encoder forward and training-step time by compute dtype and attention kernel, side by side
in one process (alternating repeats), with the load average.

    python experiments/bench/precision.py [--shape minilm|base] [--batch 32] [--seq 128]
        [--dtypes float32,bfloat16] [--attention xla,dot_product] [--repeats 5] [--train]

`minilm` is the real all-MiniLM-L6-v2 checkpoint; `base` is BERT-base's shapes (12 layers,
768 wide, 12 heads) with random weights (speed only). On GPU, `--attention auto` picks
cuDNN's fused kernel for bf16 inference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np


def build(shape: str):
    from jaxit.encoders import EncoderConfig, init_params, load_pretrained
    from jaxit.resources import model_dir

    if shape == "minilm":
        return load_pretrained(model_dir())
    cfg = EncoderConfig("bert", 30522, 768, 12, 12, 3072)
    return cfg, init_params(cfg, jax.random.PRNGKey(0))


def forward_fn(cfg, params, batch):
    from jaxit.encoders import make_encoder

    enc = make_encoder(cfg)
    fn = jax.jit(lambda p, b: enc.forward_all(p, b)["hidden"][-1])
    return lambda: jax.block_until_ready(fn(params, batch))


def train_fn(cfg, params, batch):
    from train_throughput import finetune_update  # this folder is on sys.path as a script

    update, state = finetune_update(cfg, params, donate=False)
    return lambda: jax.block_until_ready(update(state, batch)[1]["loss"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=("minilm", "base"), default="minilm")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--attention", default="xla,dot_product")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train", action="store_true", help="also time the training step (with "
                    "the xla and auto kernels only: the fused ones have no dropout)")
    args = ap.parse_args()
    from jaxit.batch import batch_from_ids

    cfg, params = build(args.shape)
    rng = np.random.default_rng(0)
    batch = jax.device_put(batch_from_ids(
        rng.integers(1000, cfg.vocab_size, (args.batch, args.seq)),
        labels=rng.integers(0, 2, (args.batch,)).astype(np.int32)))
    variants = {}
    for dtype in args.dtypes.split(","):
        for att in args.attention.split(","):
            c = cfg.replace(dtype=dtype, attention=att)
            variants[("forward", dtype, att)] = forward_fn(c, params, batch)
            if args.train and att in ("xla", "auto"):  # the fused kernels have no dropout
                variants[("train", dtype, att)] = train_fn(c, params, batch)
    times = {k: [] for k in variants}
    for fn in variants.values():
        fn()  # compile
    for _ in range(args.repeats):  # alternate so that load changes hit every variant alike
        for k, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    print(f"device {jax.devices()[0].device_kind}; {args.shape} batch {args.batch} seq "
          f"{args.seq}; median of {args.repeats}; load {os.getloadavg()[0]:.1f}")
    print("| step | dtype | attention | ms | × float32 xla |")
    print("|---|---|---|---|---|")
    for (kind, dtype, att), ts in times.items():
        ms = 1e3 * statistics.median(ts)
        base = times.get((kind, "float32", "xla"))
        ratio = f"{statistics.median(base) / statistics.median(ts):.2f}" if base else "–"
        print(f"| {kind} | {dtype} | {att} | {ms:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
