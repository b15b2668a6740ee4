"""Full-depth encoder latency on MiniLM-L6 (real checkpoint): jaxit vs HF PyTorch, one process.

    python experiments/bench/encoder_latency.py [--batch 1 32] [--seq 128] [--runs 30]

Times the whole 6-layer encoder up to the last hidden state [B, T, D] (embeddings included,
no pooler) for:

  jaxit blocks    jitted `enc.embed`, then the one jitted `enc.block` called for each layer
                  with per-layer params sliced out of the stacked tree once, before timing
                  (the fastest path; how an early-exit runner drives the encoder). One jit
                  over all layers was slower on XLA:CPU (jax 0.10): it shares scalar
                  broadcasts across layers and materialises them at full size.
  jaxit fwd_all   jit of `enc.forward_all` (lax.scan over the stacked layer params; slicing
                  the stacked weights inside the scan copies them every call)
  torch           transformers BertModel, eval(), torch.inference_mode(), default threads,
                  default attention implementation

The variants run interleaved (one call of each per round, rotating the order) so that load
from other processes hits all of them alike; each gets `--warmup` calls first, then the
median (and min) of `--runs` timed calls. Inputs: random token ids, full attention mask.
The ratio is jaxit blocks / torch. "max|diff|" is the max abs difference of the last
hidden state against PyTorch's. No XLA flags are set unless given with --xla-flags.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def _parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--runs", type=int, default=30, help="timed calls per variant (>= 20)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--xla-flags", default="", help="appended to XLA_FLAGS before JAX starts")
    return ap.parse_args()


def main():
    args = _parse()
    if args.xla_flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import jax
    import numpy as np
    import torch
    import transformers

    from jaxit import resources
    from jaxit.batch import batch_from_ids
    from jaxit.encoders import load_pretrained, make_encoder, mask_bias_from

    ckpt = resources.model_dir()
    cfg, params = load_pretrained(ckpt)
    enc = make_encoder(cfg)
    params = jax.device_put(params)
    # per-layer params, sliced once (what a runner that calls `block` layer by layer keeps)
    rest = {k: v for k, v in params.items() if k != "layers"}
    layers = [jax.tree.map(lambda x, i=i: x[i], params["layers"]) for i in range(cfg.num_layers)]
    layers = jax.block_until_ready(jax.device_put(layers))

    embed = jax.jit(lambda rest, batch: (
        enc.embed(rest, batch), mask_bias_from(batch.attention_mask, jax.numpy.float32)))
    block = jax.jit(enc.block)  # one compiled layer, called for every layer

    def jax_blocks(rest, layers, batch):
        h, bias = embed(rest, batch)
        for lp in layers:
            h = block(lp, h, bias)
        return h

    @jax.jit
    def jax_fwd_all(params, batch):
        return enc.forward_all(params, batch)["hidden"][-1]

    model = transformers.BertModel.from_pretrained(ckpt).eval()
    load0 = os.getloadavg()
    print(f"# MiniLM-L6 ({ckpt.name}): L={cfg.num_layers} D={cfg.hidden_size} "
          f"H={cfg.num_heads} F={cfg.intermediate_size}; seq {args.seq}; "
          f"median of {args.runs} runs after {args.warmup} warm-up, interleaved")
    print(f"# jax {jax.__version__} ({jax.devices()[0].platform}, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}); torch {torch.__version__} "
          f"threads={torch.get_num_threads()} (default), attn="
          f"{model.config._attn_implementation}; transformers {transformers.__version__}; "
          f"{os.cpu_count()} CPUs")
    rows = []
    rng = np.random.default_rng(0)
    for bs in args.batch:
        ids = rng.integers(1000, cfg.vocab_size, (bs, args.seq)).astype(np.int32)
        batch = jax.device_put(batch_from_ids(ids))
        tin = {"input_ids": torch.from_numpy(ids.astype(np.int64)),
               "attention_mask": torch.ones(bs, args.seq, dtype=torch.long),
               "token_type_ids": torch.zeros(bs, args.seq, dtype=torch.long)}

        def run_torch(tin=tin):
            with torch.inference_mode():
                return model(**tin).last_hidden_state

        fns = {
            "jaxit blocks": lambda b=batch: jax.block_until_ready(jax_blocks(rest, layers, b)),
            "jaxit fwd_all": lambda b=batch: jax.block_until_ready(jax_fwd_all(params, b)),
            "torch": run_torch,
        }
        outs = {k: np.asarray(f()) for k, f in fns.items()}  # compiles; also the parity check
        for _ in range(args.warmup):
            for f in fns.values():
                f()
        times: dict[str, list[float]] = {k: [] for k in fns}
        names = list(fns)
        for r in range(args.runs):
            for k in names[r % len(names):] + names[: r % len(names)]:
                t0 = time.perf_counter()
                fns[k]()
                times[k].append(time.perf_counter() - t0)
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        best = {k: 1e3 * min(v) for k, v in times.items()}
        diff = {k: float(np.max(np.abs(outs[k] - outs["torch"]))) for k in fns if k != "torch"}
        rows.append((bs, med, best, diff))
    load1 = os.getloadavg()

    head = (f"{'batch':>5} | {'jaxit blocks ms':>15} | {'jaxit fwd_all ms':>16} | "
            f"{'torch ms':>9} | {'ratio':>5} | {'ratio fwd_all':>13} | {'max|diff|':>9}")
    print(head)
    print("-" * len(head))
    for bs, med, best, diff in rows:
        print(f"{bs:>5} | {med['jaxit blocks']:>15.2f} | {med['jaxit fwd_all']:>16.2f} | "
              f"{med['torch']:>9.2f} | {med['jaxit blocks'] / med['torch']:>5.2f} | "
              f"{med['jaxit fwd_all'] / med['torch']:>13.2f} | "
              f"{max(diff.values()):>9.1e}")
    print("min ms (same runs): " + "; ".join(
        f"B={bs}: blocks {b['jaxit blocks']:.2f}, fwd_all {b['jaxit fwd_all']:.2f}, "
        f"torch {b['torch']:.2f}" for bs, _, b, _ in rows))
    print(f"# load average (1/5/15 min) before timing {load0[0]:.2f}/{load0[1]:.2f}/"
          f"{load0[2]:.2f}, after {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} "
          f"on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
