"""Where a training step's time goes: forward and forward+backward (vjp with a fixed
cotangent) of one encoder layer's pieces at the real shapes, and the dropout masks, all
timed side by side in one process (alternating, median of --reps).

    python experiments/bench/train_step_profile.py [--batch 32] [--seq 128] [--reps 5]

Use a vjp with a constant cotangent, not grad(sum(f(x) * g(f(x)))): the cotangent's own
computation (and its transpose fused into it) would be billed to the piece.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def _vjp(f, argnums):
    def g(*a):
        def ff(*d):
            full = list(a)
            for i, v in zip(argnums, d):
                full[i] = v
            return f(*full)
        y, pull = jax.vjp(ff, *[a[i] for i in argnums])
        return pull(jnp.full_like(y, 0.5))
    return jax.jit(g)


def _bernoulli_dropout(x, rate, rng):  # the pre-issue-20 mask, for comparison
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    from jaxit.encoders import load_pretrained
    from jaxit.encoders import transformer as T
    from jaxit.resources import model_dir

    cfg, params = load_pretrained(model_dir())
    lp = jax.tree.map(lambda x: x[0], params["layers"])
    b, t, d, h, hd = a.batch, a.seq, cfg.hidden_size, cfg.num_heads, cfg.head_dim
    r = np.random.default_rng(0)
    x = jnp.asarray(r.standard_normal((b, t, d)), jnp.float32)
    mb = jnp.zeros((b, t), jnp.float32)
    key = jax.random.key(3)
    qkv = T.dense(lp["qkv"], x).reshape(b, t, 3, h, hd)
    act = T._activation(cfg.hidden_act)
    pieces = {  # name -> (fn, args, differentiable argnums)
        "block, no dropout": (lambda p, x: T.block(cfg, p, x, mb), (lp, x), (0, 1)),
        "block, dropout": (lambda p, x: T.block(cfg, p, x, mb, key), (lp, x), (0, 1)),
        "qkv dense": (T.dense, (lp["qkv"], x), (0, 1)),
        "attention core": (lambda q: T._attention_xla(cfg, q, mb, None, False)[0], (qkv,), (0,)),
        "attention core, dropout": (lambda q: T._attention_xla(cfg, q, mb, key, False)[0],
                                    (qkv,), (0,)),
        "out-proj + residual + LN": (
            lambda p, ln, c, x: T.layer_norm(ln, x + T.dense(p, c), cfg.layer_norm_eps),
            (lp["attn_out"], lp["attn_ln"], x, x), (0, 1, 2, 3)),
        "FFN": (lambda p1, p2, x: T.dense(p2, act(T.dense(p1, x))),
                (lp["ffn_in"], lp["ffn_out"], x), (0, 1, 2)),
        "LayerNorm": (lambda ln, x: T.layer_norm(ln, x, cfg.layer_norm_eps),
                      (lp["attn_ln"], x), (0, 1)),
    }
    fns, args = {}, {}
    for name, (f, fa, argnums) in pieces.items():
        fns[(name, "fwd")], args[(name, "fwd")] = jax.jit(f), fa
        fns[(name, "fwd+bwd")], args[(name, "fwd+bwd")] = _vjp(f, argnums), fa
    ones = jnp.ones((b, h, t, t))
    for name, f in (("mask [B,H,T,T], jaxit dropout", T.dropout),
                    ("mask [B,H,T,T], bernoulli", _bernoulli_dropout)):
        fns[(name, "fwd")] = jax.jit(lambda k, f=f: f(ones, cfg.attention_dropout, k))
        args[(name, "fwd")] = (key,)
    for k, f in fns.items():
        jax.block_until_ready(f(*args[k]))
    times = {k: [] for k in fns}
    for _ in range(a.reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args[k]))
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"one layer of MiniLM-L6 at batch {b}, seq {t}; jax {jax.__version__}, "
          f"median of {a.reps}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'piece':34s} {'fwd ms':>8s} {'fwd+bwd ms':>11s} {'ratio':>6s}")
    for name in dict.fromkeys(n for n, _ in med):
        fwd, both = med[(name, "fwd")], med.get((name, "fwd+bwd"))
        tail = f"{both:11.1f} {both / fwd:6.1f}" if both is not None else ""
        print(f"{name:34s} {fwd:8.1f} {tail}")


if __name__ == "__main__":
    main()
