"""Where the fused runner's time goes at full depth: the static model vs the fused run
(`lax.cond` per layer + exit heads) vs the same layers with the exit heads but no conds.

    python experiments/bench/runner_exit_cost.py --workdir RUN [--bucket 32] [--repeats 400]

Times one padded example (25 real tokens) through each executable, interleaved, and prints
the minimum and median per call; the ratios to the static model isolate what the per-layer
exit work costs (FLOPs barely count it) from what the conds cost.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxit.batch import Batch
from jaxit.configs import config_from_run
from jaxit.encoders.transformer import mask_bias_from
from jaxit.inference import EarlyExitRunner, NeverExit
from jaxit.inference.exit_steps import make_layer_compute
from jaxit.sweep import method_pooling
from jaxit.train.evaluate import restore_params


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True, help="a trained multi-exit or DACT run")
    ap.add_argument("--bucket", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=400)
    args = ap.parse_args(argv)
    setup, params = restore_params(config_from_run(args.workdir), args.workdir)
    method = setup.method  # the run's own backbone, outputs and task kind
    enc, pooling = method.encoder, method_pooling(setup)
    runner = EarlyExitRunner(enc, params, method.num_outputs, method.is_regression,
                             buckets=(args.bucket,), pooling=pooling)
    runner.warmup()
    compute = make_layer_compute(enc, method.is_regression, pooling)

    @jax.jit
    def heads_no_cond(embed_params, layers, heads, lte, inputs):
        ids, tt, mask = inputs[0], inputs[1], inputs[2]
        h = enc.embed(embed_params, Batch(ids, tt, mask))
        bias = mask_bias_from(mask, h.dtype)
        rows = []
        for i, lp in enumerate(layers):
            h, packed, _ = compute(lp, heads[i], lte, h, bias, jnp.int32(i + 1))
            rows.append(packed)
        return jnp.stack(rows)

    ids = np.full((min(25, args.bucket),), 1000, np.int32)
    ids[0] = 101
    padded = runner.pad(ids)
    inputs = np.stack(padded)
    gate = runner._gate(NeverExit())
    calls = {
        "static model": lambda: runner.full_step(runner._embed_params, runner._layers,
                                                 runner._final_head, *padded),
        "fused run (conds + exit heads)": lambda: runner.fused_step(
            runner._embed_params, runner._layers, runner._heads, runner._lte, inputs, gate)[2],
        "exit heads, no conds": lambda: heads_no_cond(runner._embed_params, runner._layers,
                                                      runner._heads, runner._lte, inputs),
    }
    times = {k: [] for k in calls}
    for f in calls.values():
        jax.block_until_ready(f())
    for _ in range(args.repeats):
        for k, f in calls.items():
            t = time.perf_counter()
            jax.block_until_ready(f())
            times[k].append(time.perf_counter() - t)
    base = min(times["static model"])
    out = {}
    for k, v in times.items():
        out[k] = {"min_us": 1e6 * min(v), "median_us": 1e6 * float(np.median(v))}
        print(f"{k}: min {out[k]['min_us']:.0f} us (x{min(v) / base:.3f}), "
              f"median {out[k]['median_us']:.0f} us")
    return out


if __name__ == "__main__":
    main()
