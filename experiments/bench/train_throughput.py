"""Training-step throughput (examples/s): jaxit's jitted update step vs an equivalent
Hugging Face PyTorch loop, same model (MiniLM-L6), batch, sequence length, optimizer
(AdamW, clip 1.0), in one process.

    python experiments/bench/train_throughput.py [--batch 32] [--seq 128] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import ml_collections
import numpy as np


def finetune_update(cfg, enc_params, donate: bool = True):
    """(jitted update step, initial train state) of a two-class fine-tune of the encoder
    `cfg` with `enc_params`: jaxit's AdamW (clip 1.0), as every jaxit training run uses."""
    from jaxit.encoders import make_encoder
    from jaxit.methods import make_finetune
    from jaxit.train.optim import make_optimizer
    from jaxit.train.state import init_state
    from jaxit.train.step import make_update_fn

    method = make_finetune(make_encoder(cfg), 2, False)
    params = method.init(jax.random.PRNGKey(1), enc_params)
    tcfg = ml_collections.ConfigDict(dict(learning_rate=2e-5, warmup_fraction=0.1,
                                          weight_decay=0.01, adam_b1=0.9, adam_b2=0.999,
                                          adam_eps=1e-8, grad_clip_norm=1.0))
    tx, labels = make_optimizer(tcfg, method, params, 1000)
    update = jax.jit(make_update_fn(method, tx, labels), donate_argnums=0 if donate else ())
    return update, init_state(params, tx, 0)


def bench_jax(model_dir, batch, seq, steps, warmup):
    from jaxit.batch import batch_from_ids
    from jaxit.encoders import load_pretrained

    update, state = finetune_update(*load_pretrained(model_dir))
    rng = np.random.default_rng(0)
    b = batch_from_ids(rng.integers(1000, 30000, (batch, seq)),
                       labels=rng.integers(0, 2, (batch,)).astype(np.int32))
    b = jax.device_put(b)
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        state, m = update(state, b)
        jax.block_until_ready(m["loss"])
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times), float(m["loss"])


def bench_torch(model_dir, batch, seq, steps, warmup):
    import torch
    from transformers import BertModel

    torch.manual_seed(0)
    bert = BertModel.from_pretrained(str(model_dir))
    head = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(bert.config.hidden_size, 2))
    model = torch.nn.ModuleDict({"bert": bert, "head": head}).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    rng = np.random.default_rng(0)
    ids = torch.tensor(rng.integers(1000, 30000, (batch, seq)))
    mask = torch.ones_like(ids)
    labels = torch.tensor(rng.integers(0, 2, (batch,)))
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        pooled = model["bert"](input_ids=ids, attention_mask=mask).pooler_output
        loss = torch.nn.functional.cross_entropy(model["head"](pooled), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times), float(loss), torch.get_num_threads()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    from jaxit.resources import model_dir

    md = model_dir()
    tj, lj = bench_jax(md, a.batch, a.seq, a.steps, a.warmup)
    tt, lt, threads = bench_torch(md, a.batch, a.seq, a.steps, a.warmup)
    print(f"MiniLM-L6 training step, batch {a.batch}, seq {a.seq}, median of {a.steps} steps "
          f"after {a.warmup} warm-up; jax {jax.__version__} on {jax.devices()[0].platform}, "
          f"torch threads {threads}")
    print(f"{'impl':8s} {'ms/step':>9s} {'examples/s':>11s} {'last loss':>10s}")
    print(f"{'jaxit':8s} {tj * 1e3:9.1f} {a.batch / tj:11.1f} {lj:10.4f}")
    print(f"{'pytorch':8s} {tt * 1e3:9.1f} {a.batch / tt:11.1f} {lt:10.4f}")
    print(f"throughput ratio jaxit/pytorch: {tt / tj:.2f}x")


if __name__ == "__main__":
    main()
