"""DACT-BERT analyses (seed 000 §4.2, Figures 2 and 5): histogram of exit layers, per-layer
attention entropy, and pruning of never-used top layers.

Pruning is prediction-preserving at the deepest exit layer used. Take a classification
example that the full L-layer model, run with `DACTPolicy`, stops at layer n <= D with
answer c* = argmax a_n. Stopping means the halting bound held with d = L - n layers left:
a_n[c*] (1 - p_n)^d >= a_n[c_ru] + p_n d. Each later layer m scales a by (1 - p_{m-1}) >=
(1 - p_n) and adds at most p_{m-1} <= p_n to any class, so c* stays the argmax of a_m for
every m in n..L (for k <= d layers, a[c*] (1 - p)^k >= a[c*] (1 - p)^d and a[c] + p k <=
a[c_ru] + p d). The D-layer model pruned to layers 1..D computes the same a_1..a_D (same
layers, heads and halting units; its final head is layer D's exit head). Its policy uses
d' = D - m <= L - m, so the bound, which only gets easier with fewer layers left, fires at
layer n or earlier (or the runner stops at its last layer D), at some n' <= n; the pruned
model's own bound (or n' = D) makes its answer argmax a_{n'} = argmax a_D, and a_D is a
state of the full model after its stop, so argmax a_D = c*. Hence: if every example exits
at a layer <= D in the full model, the pruned model gives identical predictions (its exit
layers can only be earlier). `pruning_check` verifies this on data with both runners.
Regression answers are not identical: both land within the tolerance of a_D, so they can
differ by up to 2 tolerance (reported as the largest |difference|).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxit.batch import Batch
from jaxit.encoders.transformer import Encoder, make_encoder, mask_bias_from


def check_dact_params(params: dict) -> None:
    """Raises a clear error unless `params` is a DACT model (exits, final, halting)."""
    heads = params.get("heads", {}) if isinstance(params, dict) else {}
    missing = [k for k in ("exits", "final", "halting") if k not in heads]
    if missing:
        raise ValueError(f"not a DACT model: params['heads'] lacks {missing}; train a run with "
                         "--config.method.name=dact")


def num_dact_layers(params: dict) -> int:
    check_dact_params(params)
    return int(params["heads"]["halting"]["kernel"].shape[0])


# ----------------------------------------------------------------------------- exit layers


def exit_histogram(exit_layers, num_layers: int) -> np.ndarray:
    """Counts [L] of examples per exit layer (index l - 1 for layer l, 1-based)."""
    e = np.asarray(exit_layers).reshape(-1)
    if e.size and (e.min() < 1 or e.max() > num_layers):
        raise ValueError(f"exit layers must lie in 1..{num_layers}, got {e.min()}..{e.max()}")
    return np.bincount(e.astype(np.int64) - 1, minlength=num_layers)[:num_layers]


def exit_histogram_report(exit_layers, num_layers: int) -> dict:
    counts = exit_histogram(exit_layers, num_layers)
    n = int(counts.sum())
    if n == 0:
        raise ValueError("no exit layers to summarise")
    e = np.asarray(exit_layers).reshape(-1)
    return {"num_layers": int(num_layers), "num_examples": n,
            "counts": {str(l + 1): int(c) for l, c in enumerate(counts)},
            "fractions": {str(l + 1): float(c) / n for l, c in enumerate(counts)},
            "mean_exit_layer": float(e.mean()), "max_exit_layer": int(e.max())}


def write_exit_histogram(exit_layers, num_layers: int, out_dir, title: str = "",
                         name: str = "exit_histogram") -> dict:
    """Writes <out_dir>/<name>.json and .png (bar chart of exit-layer counts, Figure 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = exit_histogram_report(exit_layers, num_layers)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    layers = np.arange(1, num_layers + 1)
    ax.bar(layers, [report["counts"][str(l)] for l in layers], color="tab:blue")
    ax.set_xticks(layers)
    ax.set_xlabel("exit layer")
    ax.set_ylabel("examples")
    ax.set_title(title or f"DACT exit layers (n={report['num_examples']}, "
                 f"mean {report['mean_exit_layer']:.2f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}.png", dpi=110)
    plt.close(fig)
    return report


# ----------------------------------------------------------------------------- attention


def row_entropy(probs: jnp.ndarray, key_mask: jnp.ndarray) -> jnp.ndarray:
    """Entropy (nats) of attention rows over real keys: probs [B, H, T, T], key_mask [B, T]
    (1 real) -> [B, H, T]. Rows are renormalised over real keys; 0 log 0 = 0."""
    p = probs.astype(jnp.float32) * key_mask.astype(jnp.float32)[:, None, None, :]
    p = p / jnp.maximum(p.sum(-1, keepdims=True), 1e-30)
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, 1e-30)), 0.0), axis=-1)


def attention_entropy_sums(encoder: Encoder, encoder_params: dict, batch: Batch):
    """(sums [L, H], count []): per layer and head, the summed entropy of every real query
    token's attention row over real keys in `batch`, and the number of real query tokens.
    One `lax.scan` over layers; jit-able."""
    cfg = encoder.config
    mask = jnp.asarray(batch.attention_mask)
    hidden = encoder.embed(encoder_params, batch)
    bias = mask_bias_from(mask, hidden.dtype)
    qmask = mask.astype(jnp.float32)[:, None, :]  # [B, 1, T]

    def step(h, lp):
        lp = encoder_params["layers"] if lp is None else lp
        h, probs = encoder.block(lp, h, bias, return_attention=True)
        ent = row_entropy(probs, mask)  # [B, H, T]
        return h, (ent * qmask).sum(axis=(0, 2))

    layers = None if cfg.shared_layers else encoder_params["layers"]
    _, sums = jax.lax.scan(step, hidden, layers, length=cfg.num_layers)
    return sums, qmask.sum()


def attention_entropy(encoder: Encoder, encoder_params: dict, batches: Iterable[Batch]) -> dict:
    """Mean attention entropy over `batches`: {"per_head": [L, H] (mean over real query
    tokens), "per_layer": [L] (mean over heads too), "num_tokens": real query tokens}
    (numpy, nats). A uniform row over n real keys has entropy log n."""
    fn = jax.jit(lambda p, b: attention_entropy_sums(encoder, p, b))
    total, count = None, 0.0
    for b in batches:
        b = Batch(*(np.asarray(x) for x in b[:3]))
        sums, c = jax.device_get(fn(encoder_params, b))
        total = sums.astype(np.float64) if total is None else total + sums
        count += float(c)
    if total is None or count == 0:
        raise ValueError("attention entropy needs at least one real token")
    per_head = total / count
    chex.assert_shape(per_head, (encoder.config.num_layers, encoder.config.num_heads))
    chex.assert_tree_all_finite(per_head)
    return {"per_head": per_head, "per_layer": per_head.mean(axis=1), "num_tokens": int(count)}


def write_attention_entropy(result: dict, out_dir, title: str = "",
                            name: str = "attention_entropy") -> dict:
    """Writes <out_dir>/<name>.json and .png (one dot per head, the layer mean as a line:
    the paper's Figure 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_head = np.asarray(result["per_head"])
    report = {"per_layer": [float(v) for v in result["per_layer"]],
              "per_head": per_head.tolist(), "num_tokens": int(result["num_tokens"]),
              "units": "nats"}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2))
    n_layers, n_heads = per_head.shape
    layers = np.arange(1, n_layers + 1)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.scatter(np.repeat(layers, n_heads), per_head.reshape(-1), s=10, alpha=0.5,
               color="tab:blue", label="head")
    ax.plot(layers, report["per_layer"], color="tab:blue", label="layer mean")
    ax.set_xticks(layers)
    ax.set_ylim(0.0, max(float(per_head.max()) * 1.1, 1e-3))
    ax.set_xlabel("layer")
    ax.set_ylabel("attention entropy (nats)")
    ax.set_title(title or "attention entropy per layer", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}.png", dpi=110)
    plt.close(fig)
    return report


# ----------------------------------------------------------------------------- pruning


def prune_unused_layers(encoder: Encoder, params: dict, depth: int) -> tuple[Encoder, dict]:
    """A DACT model with only layers 1..`depth`: (encoder with num_layers = depth, params).

    Encoder layers (unless ALBERT's shared one), intermediate exit heads and halting units are
    sliced to the first `depth`; the final head is layer `depth`'s exit head. Other head
    entries are kept as they are. See the module docstring for why pruning at the deepest
    exit layer used keeps every prediction.
    """
    check_dact_params(params)
    cfg = encoder.config
    L = num_dact_layers(params)
    if L != cfg.num_layers:
        raise ValueError(f"params have {L} halting units but the encoder has {cfg.num_layers}")
    depth = int(depth)
    if not 1 <= depth <= L:
        raise ValueError(f"prune depth must be in 1..{L}, got {depth}")
    enc, heads = params["encoder"], params["heads"]
    first = lambda tree, k: jax.tree.map(lambda x: x[:k], tree)
    if not cfg.shared_layers:
        enc = {**enc, "layers": first(enc["layers"], depth)}
    final = heads["final"] if depth == L else jax.tree.map(lambda x: x[depth - 1], heads["exits"])
    new_heads = {**heads, "exits": first(heads["exits"], depth - 1), "final": final,
                 "halting": first(heads["halting"], depth)}
    return make_encoder(cfg.replace(num_layers=depth)), {"encoder": enc, "heads": new_heads}


def count_params(tree) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def pruning_check(encoder: Encoder, params: dict, examples: Sequence, is_regression: bool,
                  depth: int | None = None, tolerance: float = 0.1, value_range: float = 5.0,
                  buckets: Sequence[int] | None = None, full_results=None,
                  pooling: str = "cls") -> dict:
    """Runs `DACTPolicy` with the batch-1 runner on the full model and on the model pruned to
    `depth` (default: the deepest exit layer the full model used on `examples`) and compares.

    `examples`: (input_ids, token_type_ids) pairs of real tokens; `pooling` as the model was
    trained ("cls" or "mean"). `full_results`: the full
    model's `RunResults` on `examples` if already computed. Returns a JSON-able report with
    "identical_predictions", "num_changed", exit-layer means and parameter counts, and the
    full and pruned `RunResults` under "_full" / "_pruned" (not JSON).
    """
    from jaxit.inference.buckets import DEFAULT_BUCKETS
    from jaxit.inference.policies import DACTPolicy
    from jaxit.inference.runner import EarlyExitRunner

    check_dact_params(params)
    examples = list(examples)
    if not examples:
        raise ValueError("the pruning check needs at least one example")
    buckets = tuple(buckets or DEFAULT_BUCKETS)
    num_outputs = int(params["heads"]["final"]["out"]["bias"].shape[-1])
    L = encoder.config.num_layers

    def run(enc, p, layers):
        runner = EarlyExitRunner(enc, p, num_outputs, is_regression, buckets, pooling=pooling)
        return runner.run(examples, DACTPolicy(layers, tolerance, value_range))

    full = full_results if full_results is not None else run(encoder, params, L)
    used = int(full.exit_layers.max())
    depth = used if depth is None else int(depth)
    enc_p, params_p = prune_unused_layers(encoder, params, depth)
    pruned = full if depth == L else run(enc_p, params_p, depth)  # nothing pruned: same model
    if is_regression:
        diff = np.abs(full.outputs[:, 0] - pruned.outputs[:, 0])
        changed = diff > 0
    else:
        changed = full.predictions != pruned.predictions
    report = {
        "num_layers": L, "depth": depth, "max_exit_layer_full": used,
        "num_examples": len(examples),
        "identical_predictions": bool(not changed.any()), "num_changed": int(changed.sum()),
        "mean_exit_layer_full": float(full.exit_layers.mean()),
        "mean_exit_layer_pruned": float(pruned.exit_layers.mean()),
        "num_exit_layers_changed": int((full.exit_layers != pruned.exit_layers).sum()),
        "encoder_params_full": count_params(params["encoder"]),
        "encoder_params_pruned": count_params(params_p["encoder"]),
        "_full": full, "_pruned": pruned,
    }
    if is_regression:
        report["max_abs_output_diff"] = float(diff.max())
    return report
