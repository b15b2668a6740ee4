"""Benchmark: the batch-1 early-exit runner on MiniLM-L6 and SST-2 dev.

    python experiments/bench/early_exit_runner.py [--num_examples 872] [--repeats 2]
        [--workdir RUN_DIR]   # a trained multi-exit or DACT run (its hparams.json config)

Reports, for a few exit thresholds, the wall-clock speed-up of the runner over the static
full model (one jitted call per example, same process, same length buckets), the FLOPs
speed-up (real tokens only) and their ratio (goal >= 0.9): how much of the FLOPs saving
the runner turns into time. Also the per-layer loop overhead (goal < 50 us), measured two
ways: (a) the runner at full depth minus the same jitted calls chained without the per-layer
host round trip and policy; (b) the runner's loop around a null per-layer function.

Without a trained checkpoint the exit heads are random, so exits are not meaningful for
accuracy; their output weights are scaled up so that confidences spread out and the
thresholds below give a range of exit layers (a timing benchmark, as the issue allows).
Times are the minimum over `repeats` per example, interleaved across configurations.

Columns: wall/FLOPs = wall-clock speed-up / FLOPs speed-up (real tokens, DESIGN §6), the
goal metric; "vs runner at depth L" uses the runner at full depth as the reference instead
of the static model; "padded FLOPs" counts the FLOPs actually executed (bucket padding
included); "layer-time" divides by the speed-up expected if each example's static time
shrank by exit_layer / L, which isolates the runner's own overheads from the fact that
time, unlike FLOPs, does not scale with sequence length (fixed per-layer costs, padding).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax
import jax.numpy as jnp
import numpy as np

from jaxit import resources
from jaxit.batch import batch_from_ids
from jaxit.encoders import load_pretrained, load_tokenizer, make_encoder
from jaxit.inference import (
    ConfidencePolicy,
    EarlyExitRunner,
    FixedLayerPolicy,
    NeverExit,
)
from jaxit.inference.buckets import load_runner_examples
from jaxit.inference.evaluate_exits import collect_layer_outputs, measure_wallclock
from jaxit.inference.policies import DACTPolicy
from jaxit.methods.early_exit import make_early_exit


def load_params(args, enc_params, encoder):
    if args.workdir:
        import importlib.util

        from jaxit.train.evaluate import restore_params

        if args.config:
            spec = importlib.util.spec_from_file_location("cfg", args.config)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            config = mod.get_config()
        else:  # the run's own hparams.json
            from jaxit.configs import config_from_run

            config = config_from_run(args.workdir)
        _, params = restore_params(config, args.workdir)
        return params, False, str(config.method.get("pooling", None) or "cls")
    method = make_early_exit(encoder, 2, False, 1, "joint")
    params = method.init(jax.random.PRNGKey(0), enc_params)
    for k in ("exits", "final"):  # spread the random heads' confidences (timing only)
        params["heads"][k]["out"]["kernel"] = params["heads"][k]["out"]["kernel"] * 10.0
    return params, True, "cls"


def thresholds_for_targets(encoder, params, examples, targets):
    """Confidence thresholds whose (simulated) average exit layers hit `targets`."""
    batches = []
    for i in range(0, len(examples), 64):
        chunk = [ids for ids, _ in examples[i:i + 64]]
        ids = np.zeros((len(chunk), 128), np.int32)
        mask = np.zeros_like(ids)
        for j, x in enumerate(chunk):
            ids[j, :len(x)], mask[j, :len(x)] = x, 1
        batches.append(batch_from_ids(ids, mask))
    conf = collect_layer_outputs(encoder, params, batches, False).probs.max(-1)  # [L, N] (cls)
    L = conf.shape[0]

    def avg_exit(t):
        hit = conf >= t
        return float(np.where(hit.any(0), hit.argmax(0) + 1, L).mean())

    out = []
    for target in targets:
        lo, hi = 0.0, 1.0 + 1e-6  # avg_exit increases with t
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if avg_exit(mid) < target else (lo, mid)
        out.append(round(hi, 6))
    return out


def chained_time(runner, ids):
    """Embedding + L per-layer calls dispatched back to back, one sync at the end."""
    start = time.perf_counter()
    inputs = np.stack(runner.pad(ids))
    hidden, bias, packed, _ = runner.first_step(
        runner._embed_params, runner._layers[0], runner._heads[0], runner._lte, inputs,
        runner._true, runner._layer_ids[0], runner._no_gate)
    for lp, hp, li in zip(runner._layers[1:], runner._heads[1:], runner._layer_ids[1:]):
        hidden, packed, _ = runner.layer_step(lp, hp, runner._lte, hidden, bias, runner._true,
                                              li, runner._no_gate)
    packed.block_until_ready()
    return time.perf_counter() - start


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num_examples", type=int, default=0, help="0 = all 872")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--thresholds", default="0.6,0.8,0.9,0.95",
                    help="confidence thresholds (trained heads)")
    ap.add_argument("--target_layers", default="1.5,2.5,3.5,4.5",
                    help="random heads: thresholds chosen to give these average exit layers")
    ap.add_argument("--json", default="", help="also write the measurements to this file")
    ap.add_argument("--buckets", default="16,32,64,128", help="padded lengths")
    ap.add_argument("--workdir", default="", help="trained multi-exit or DACT run")
    ap.add_argument("--config", default="", help="config file (default: the run's hparams.json)")
    args = ap.parse_args(argv)

    model_dir = resources.model_dir()
    cfg, enc_params = load_pretrained(model_dir)
    encoder = make_encoder(cfg)
    tokenizer = load_tokenizer(model_dir)
    examples, labels = load_runner_examples(tokenizer, "sst2", "dev", limit=args.num_examples)
    params, random_heads, pooling = load_params(args, enc_params, encoder)
    buckets = tuple(int(b) for b in args.buckets.split(","))
    runner = EarlyExitRunner(encoder, params, 2, False, buckets=buckets, pooling=pooling)
    t0 = time.perf_counter()
    runner.warmup()
    warm = time.perf_counter() - t0
    traces_after_warmup = dict(runner.trace_counts)

    if random_heads:
        targets = [float(t) for t in args.target_layers.split(",")]
        thresholds = thresholds_for_targets(encoder, params, examples, targets)
    else:
        thresholds = [float(t) for t in args.thresholds.split(",")]
    policies = {f"confidence>={t:.4g}": ConfidencePolicy(t) for t in thresholds}
    mid = thresholds[len(thresholds) // 2]
    options = {}  # non-default run modes (fused is the runner's default)
    for mode, opts in (("pipelined", {"fused": False}),
                       ("round trip", {"fused": False, "pipeline": False})):
        policies[f"confidence>={mid:.4g}, {mode}"] = ConfidencePolicy(mid)
        options[f"confidence>={mid:.4g}, {mode}"] = opts
    policies.update({f"fixed layer {k}": FixedLayerPolicy(k) for k in (2, 4)})
    if "halting" in params["heads"]:  # a DACT model: its own halting rule
        policies["dact halting bound"] = DACTPolicy(cfg.num_layers)
        policies["dact halting bound, round trip"] = DACTPolicy(cfg.num_layers)
        options["dact halting bound, round trip"] = {"fused": False}
    policies["never exit (L=6)"] = NeverExit()
    policies["never exit (L=6), round trip"] = NeverExit()
    options["never exit (L=6), round trip"] = {"fused": False, "pipeline": False}
    t0 = time.perf_counter()
    wall = measure_wallclock(runner, examples, policies, repeats=args.repeats, labels=labels,
                             run_options=options)
    bench_s = time.perf_counter() - t0

    # Loop overhead (a): the runner at full depth (fused, pipelined, and one round trip per
    # layer) vs the same jitted per-layer calls chained with one sync at the end.
    sub = examples[: min(len(examples), 300)]
    reps = args.repeats + 1
    modes = {"fused": {}, "pipelined": {"fused": False},
             "round trip": {"fused": False, "pipeline": False}}
    mode_t = {m: [] for m in modes}
    chain_t = []
    never = NeverExit()
    for ids, _ in sub:
        for m, opts in modes.items():
            mode_t[m].append(min(runner.run_one(ids, None, never, **opts).seconds
                                 for _ in range(reps)))
        chain_t.append(min(chained_time(runner, ids) for _ in range(reps)))
    L = cfg.num_layers
    med = lambda xs: 1e6 * statistics.median(xs)
    overhead = {m: (med(t) - med(chain_t)) / L for m, t in mode_t.items()}
    # (b): the round-trip loop around null functions (no embedding, no Transformer work):
    # an upper bound of the host cost per layer (it also holds the per-example fixed costs).
    real_step, real_first = runner.layer_step, runner.first_step

    width = 2 * runner.num_outputs + int(runner.has_lte) + int(runner.has_halting) + 1

    @jax.jit
    def null_step(lp, head, lte, hidden, mask_bias, active, layer, gate):
        return hidden, jnp.ones((hidden.shape[0], width), jnp.float32), active

    @jax.jit
    def null_first(embed_params, lp, head, lte, inputs, active, layer, gate):
        t = inputs.shape[-1]
        return (jnp.zeros((1, t, cfg.hidden_size)), jnp.zeros((1, t)),
                jnp.ones((1, width), jnp.float32), active)

    runner.layer_step, runner.first_step = null_step, null_first
    rt = modes["round trip"]
    for ids, _ in sub:
        runner.run_one(ids, None, never, **rt)
    null_t = [min(runner.run_one(ids, None, never, **rt).seconds for _ in range(reps))
              for ids, _ in sub]
    runner.layer_step, runner.first_step = real_step, real_first
    overhead_null = med(null_t) / L

    print(f"# early-exit runner benchmark: MiniLM-L6 ({model_dir.name}), SST-2 dev, batch 1")
    print(f"# {len(examples)} examples, repeats={args.repeats} (min per example), "
          f"buckets={runner.buckets}, heads={'random (scaled)' if random_heads else 'trained'}")
    print(f"# device: {jax.devices()[0].platform} ({jax.devices()[0].device_kind}), "
          f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"jax {jax.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"# warm-up (compile all buckets) {warm:.1f}s; traces {traces_after_warmup}; "
          f"after the benchmark {runner.trace_counts} (no recompilation)")
    st = wall["static"]
    print(f"# static full model: {st['us_per_example']:.0f} us/example, "
          f"accuracy {st['accuracy']:.4f}")
    print()
    full = wall["never exit (L=6)"]
    print("| policy | avg exit layer | accuracy | us/example | wall speed-up | FLOPs speed-up "
          "| **wall/FLOPs** | wall/FLOPs vs runner at depth L | wall/padded FLOPs "
          "| wall/layer-time |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k in policies:
        r = wall[k]
        vs_runner = (full["seconds"] / r["seconds"]) / (full["flops"] / r["flops"])
        print(f"| {k} | {r['avg_exit_layer']:.2f} | {r['accuracy']:.4f} | "
              f"{r['us_per_example']:.0f} | {r['wall_speedup']:.3f} | "
              f"{r['flops_speedup']:.3f} | **{r['wall_over_flops']:.3f}** | {vs_runner:.3f} | "
              f"{r['wall_over_padded_flops']:.3f} | {r['wall_over_layer_time']:.3f} |")
    print()
    print(f"per-layer overhead vs chained jitted per-layer calls (median over {len(sub)} "
          f"examples, chained {med(chain_t):.0f} us/example): "
          + "; ".join(f"{m} {overhead[m]:.1f} us/layer ({med(mode_t[m]):.0f} us/example)"
                      for m in modes))
    print(f"host loop cost per layer around null layers (dispatch + transfer + policy, and "
          f"the per-example fixed costs spread over L): {overhead_null:.1f} us/layer "
          f"({med(null_t):.0f} us/example)")
    print(f"# device/host gate disagreements: pipelined layers re-run {runner.reruns}, "
          f"fused runs continued or cut by the host {runner.fused_disagreements}")
    print(f"# benchmark wall time {bench_s:.0f}s")
    if args.json:
        import json

        wall["overhead_us_per_layer"] = {**{f"{m}_vs_chained": v for m, v in overhead.items()},
                                         "null_layer_loop": overhead_null}
        with open(args.json, "w") as f:
            json.dump(wall, f, indent=2)
    return wall


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
