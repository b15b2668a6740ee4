"""Benchmark: the batched adaptive engine against the static batched model, same batch size.

    # early exit / DACT on SST-2 dev with a trained run (policies as name:threshold)
    python experiments/bench/batched_engine.py --workdir RUN \
        --policies confidence:0.8,confidence:0.9,never [--batch_sizes 32,64] [--repeats 3]
    # token dropping on a longer-input task (IMDB test_subset): random CPs on the run's
    # backbone when it has none, at several eta (a timing benchmark: say so in the table)
    python experiments/bench/batched_engine.py --workdir RUN --mode tokens --task imdb \
        --split test_subset --max_length 512 --etas 0.5,1.0,1.5 --random_cps 0.3
    # the demo's runs (random encoder, synthetic task: its own dev split)
    python experiments/bench/batched_engine.py --workdir runs/demo/berxit-alternating \
        --policies confidence:0.8,never --batch_sizes 32 --buckets 16,32
    # exits + CPs on one model (random CPs on a multi-exit run)
    python experiments/bench/batched_engine.py --workdir RUN --mode both --etas 1.0 \
        --policies confidence:0.8

For every batch size B: the engine (batch sizes 1, 4, 8, 16, B: the tails of its queues run
as smaller full batches) and the static full model (`BatchedEngine.run_static`: examples
grouped by length bucket, batches of B, the last of a bucket at the smallest size that holds
it) run on the same examples in one process, interleaved, `repeats` times; times are the
minimum. Reported: wall-clock speed-up, FLOPs speed-up (real tokens), their ratio (goal
>= 0.9 for depth, >= 0.85 for token dropping), examples/s, the host's own time per
dispatch (scheduling; overlapped with the device's work) and its wait for results,
padded rows, compiled executables and compiles after warm-up (must be 0), accuracy, and
the load average. `--torch` adds Hugging Face PyTorch's batched full-depth BertModel on the
same buckets and batch size as a reference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax
import numpy as np

from jaxit.configs import config_from_run
from jaxit.encoders import load_tokenizer
from jaxit.inference import DACTPolicy, NeverExit, load_runner_examples, make_policy
from jaxit.inference.adapler_runs import with_random_cps
from jaxit.inference.engine import BatchedEngine
from jaxit.inference.throughput import measure_throughput
from jaxit.sweep import dev_examples
from jaxit.train.evaluate import restore_params


def parse_policy(spec: str, num_layers: int):
    name, _, value = spec.partition(":")
    if name == "never":
        return NeverExit()
    if name == "dact":
        return DACTPolicy(num_layers, tolerance=float(value or 0.0))
    return make_policy(name, float(value) if name != "patience" else int(value))


def load(args):
    """(encoder, params, pooling, num_outputs, model_dir) of the run, with random CPs (and
    η = 1) added in tokens/both mode when it has none."""
    config = config_from_run(args.workdir)
    setup, params = restore_params(config, args.workdir, args.checkpoint)
    pooling = str(config.method.get("pooling", None) or "cls")
    params = jax.tree.map(np.asarray, params)
    encoder = setup.method.encoder
    cfg = encoder.config
    if args.mode != "exits" and "cp" not in params["heads"]:
        params["heads"] = with_random_cps(params["heads"], cfg, args.random_cps, eta=1.0)
    if args.mode == "tokens":  # width only: no exits
        params["heads"] = {k: v for k, v in params["heads"].items()
                           if k in ("final", "cp", "eta", "theta")}
    return encoder, params, pooling, setup.method.num_outputs, setup.task, config.model, setup


def run_examples(args, setup, model_dir, task):
    """(examples, labels): a run on a random encoder (the demo's synthetic task) has no
    tokenizer, so its own dev split is used; otherwise the named task's split."""
    if model_dir == "random":
        ds = setup.eval_data
        n = min(args.num_examples or len(ds), len(ds))
        return dev_examples(setup, n), np.asarray(ds.labels[:n])
    return load_runner_examples(load_tokenizer(model_dir), args.task or task.name, args.split,
                                max_length=args.max_length, limit=args.num_examples)


def torch_reference(model_dir, examples, buckets, batch, repeats):
    import torch
    from transformers import AutoModel

    torch.set_num_threads(os.cpu_count() or 1)
    model = AutoModel.from_pretrained(model_dir).eval()
    lens = np.array([e[0].size for e in examples])
    ks = np.searchsorted(np.asarray(buckets), lens)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            for k, t in enumerate(buckets):
                idx = np.flatnonzero(ks == k)
                for s in range(0, idx.size, batch):
                    rows = idx[s:s + batch]
                    ids = np.zeros((rows.size, t), np.int64)
                    mask = np.zeros_like(ids)
                    for r, e in enumerate(rows):
                        ids[r, :lens[e]], mask[r, :lens[e]] = examples[e][0], 1
                    model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--checkpoint", default="best")
    ap.add_argument("--mode", choices=("exits", "tokens", "both"), default="exits")
    ap.add_argument("--task", default=None, help="default: the run's task")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--max_length", type=int, default=128)
    ap.add_argument("--buckets", default="16,32,64,128")
    ap.add_argument("--policies", default="never")
    ap.add_argument("--etas", default="", help="eta settings (tokens/both): scalars")
    ap.add_argument("--random_cps", type=float, default=0.3)
    ap.add_argument("--batch_sizes", default="32,64")
    ap.add_argument("--num_examples", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--torch", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    enc, params, pooling, num_outputs, task, model_dir, setup = load(args)
    L = enc.config.num_layers
    examples, labels = run_examples(args, setup, model_dir, task)
    buckets = tuple(int(b) for b in args.buckets.split(","))
    policies = [parse_policy(p, L) for p in args.policies.split(",")]
    etas = [float(e) for e in args.etas.split(",") if e] or [None]
    settings = [(p, e) for p in policies for e in etas]
    load_before = os.getloadavg()
    report = {"workdir": args.workdir, "mode": args.mode, "task": args.task or task.name,
              "num_examples": len(examples), "avg_tokens": float(np.mean([e[0].size
                                                                           for e in examples])),
              "machine": platform.processor() or platform.machine(),
              "devices": [str(d) for d in jax.local_devices()], "rows": []}
    for B in (int(b) for b in args.batch_sizes.split(",")):
        sizes = tuple(sorted({1, 4, 8, 16, B}))
        engine = BatchedEngine(enc, params, num_outputs, task.is_regression, pooling=pooling,
                               buckets=buckets, batch_sizes=sizes)
        t0 = time.perf_counter()
        engine.warmup(*policies)
        warm_s = time.perf_counter() - t0
        executables = len(engine.trace_counts)
        names = {repr(p) + ("" if e is None else f", eta={e}"): (p, e) for p, e in settings}
        m = measure_throughput(engine, examples, names, repeats=args.repeats, labels=labels,
                               metric="accuracy")
        static = m.pop("static")
        row0 = {"batch": B, "config": "static", **static, "executables": executables,
                "warmup_s": warm_s}
        if args.torch:
            tt = torch_reference(model_dir, examples, buckets, B, args.repeats)
            row0["torch_seconds"], row0["static_vs_torch"] = tt, tt / static["seconds"]
        report["rows"].append(row0)
        for name, r in m.items():
            report["rows"].append({"batch": B, "config": name, **r, "host_us_per_dispatch":
                                   1e6 * r["host_busy_s"] / max(r["dispatches"], 1)})
    report["load_average"] = [load_before, os.getloadavg()]
    print(json.dumps(report, indent=1, default=float))
    print(f"\nload average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"{'B':>3} {'config':<58} {'acc':>6} {'exit':>5} {'ex/s':>7} {'wall×':>6} "
          f"{'FLOPs×':>6} {'ratio':>6} {'pad%':>5}")
    for row in report["rows"]:
        print(f"{row['batch']:>3} {row['config'][:58]:<58} {row['accuracy']:>6.4f} "
              f"{row.get('avg_exit_layer', L):>5.2f} {row['examples_per_s']:>7.1f} "
              f"{row.get('wall_speedup', 1.0):>6.3f} {row.get('flops_speedup', 1.0):>6.3f} "
              f"{row.get('wall_over_flops', 1.0):>6.3f} "
              f"{100 * row.get('padded_rows', 0) / max(row.get('rows', 1), 1):>5.1f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1, default=float)


if __name__ == "__main__":
    main()
