"""The token-importance baselines of AdapLeR's figure 5 (seed 002 §5.3), layer by layer, from
a fine-tuned model, in the contribution predictors' layout: scores [L, n] on one example's n
tokens, index ℓ = the quantity computed on h^ℓ (ℓ = 0: the embedding output), as CP ℓ reads
h^ℓ to choose the tokens of layer ℓ + 1. Each row sums to 1 over the example's tokens
([CLS] and [SEP] included), so the uniform level is 1/n as for the CPs.

- "attention": the attention every token receives in layer ℓ + 1 (its column of the
  attention matrix, averaged over heads and over the n query tokens);
- "cls_attention": [CLS]'s attention to every token in layer ℓ + 1 (head mean);
- "rollout": attention rollout (Abnar & Zuidema 2020) through layer ℓ + 1: with
  Â = 0.5·A + 0.5·I (head mean, rows renormalised), R_ℓ = Â_{ℓ+1} R_{ℓ-1}, R_{-1} = I; the
  score is [CLS]'s row of R_ℓ;
- "rollout_received": the rollout each token receives from all tokens (the column mean of
  R_ℓ over the real queries; PoWER-BERT's accumulation, Table 2's "Attention ALL");
- "saliency": ||∂y_c/∂h^ℓ_i ⊙ h^ℓ_i||₂ for the gold (or the predicted) class c (ℓ = 0 is
  AdapLeR's phase-2 saliency, `jaxit.interpret.saliency.embedding_saliency`), normalised
  over the tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxit.batch import Batch
from jaxit.encoders.transformer import Encoder, mask_bias_from
from jaxit.heads import head_outputs

BASELINES = ("attention", "cls_attention", "rollout", "rollout_received", "saliency")


SALIENCY_TARGETS = ("gold", "predicted")


def layer_baseline_scores(encoder: Encoder, params: dict, batch: Batch, pooling: str = "cls",
                          names=BASELINES, target: str = "gold") -> dict[str, jnp.ndarray]:
    """{name: [L, B, T]} for every name in `names` (of BASELINES) on a batch (rows
    renormalised over each example's real tokens, 0 on padding). Saliency is taken for
    batch.labels (target="gold") or for the model's own argmax (target="predicted", read in
    the same forward pass); without "saliency" in `names` no backward pass is traced."""
    if target not in SALIENCY_TARGETS:
        raise ValueError(f"saliency target {target!r}; choose from {SALIENCY_TARGETS}")
    want_saliency = "saliency" in names
    gold_labels = want_saliency and target == "gold"
    if gold_labels and batch.labels is None:
        raise ValueError("saliency needs the gold labels (batch.labels is None)")
    cfg = encoder.config
    enc = params["encoder"]
    mask = jnp.asarray(batch.attention_mask, jnp.float32)
    bias = mask_bias_from(batch.attention_mask, jnp.float32)
    h0 = encoder.embed(enc, batch)
    zeros = [jnp.zeros_like(h0) for _ in range(cfg.num_layers)]

    def run(deltas):
        """Every h^ℓ + δ_ℓ (δ = 0: gradients w.r.t. δ_ℓ are those w.r.t. h^ℓ)."""
        h, states, probs = h0, [], []
        for i in range(cfg.num_layers):
            h = h + deltas[i]
            states.append(h)
            h, p = encoder.block(encoder.layer_params(enc, i), h, bias, return_attention=True)
            probs.append(p.astype(jnp.float32).mean(1))  # [B, T, T], head mean
        logits, _ = head_outputs(params["heads"]["final"], h, mask, pooling)
        logits = logits.astype(jnp.float32)
        labels = (jnp.asarray(batch.labels).astype(jnp.int32) if gold_labels
                  else jnp.argmax(jax.lax.stop_gradient(logits), -1))
        return jnp.take_along_axis(logits, labels[:, None], -1).sum(), (states, probs)

    if want_saliency:
        grads, (states, probs) = jax.grad(run, has_aux=True)(zeros)
    else:
        _, (states, probs) = run(zeros)
    att = jnp.stack(probs)  # [L, B, Tq, Tk]
    n = mask.sum(-1)  # [B]
    received = (att * mask[None, :, :, None]).sum(2) / n[None, :, None]
    eye = jnp.eye(att.shape[-1], dtype=jnp.float32)
    roll, rolled, roll_received = jnp.broadcast_to(eye, att.shape[1:]), [], []
    for l in range(cfg.num_layers):
        a = 0.5 * att[l] + 0.5 * eye
        a = a / a.sum(-1, keepdims=True)
        roll = a @ roll
        rolled.append(roll[:, 0])
        roll_received.append((roll * mask[:, :, None]).sum(1) / n[:, None])
    out = {"attention": received, "cls_attention": att[:, :, 0], "rollout": jnp.stack(rolled),
           "rollout_received": jnp.stack(roll_received)}
    if want_saliency:
        out["saliency"] = jnp.stack([jnp.sqrt(jnp.sum(jnp.square((g * s).astype(jnp.float32)), -1))
                                     for g, s in zip(grads, states)])  # [L, B, T]
    return {k: _normalised(v, mask) for k, v in out.items() if k in names}


def _normalised(scores: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    s = scores * mask[None]
    return s / jnp.maximum(s.sum(-1, keepdims=True), 1e-30)


def example_baseline_scores(fn, params: dict, ids: np.ndarray, types: np.ndarray, label: int,
                            pad_to: int | None = None) -> dict[str, np.ndarray]:
    """One example's {name: [L, n]} float64 numpy from `fn` (a jitted
    `layer_baseline_scores` closed over the encoder and pooling), zero-padded to `pad_to`
    tokens (a length bucket: one compile per bucket; padding changes no score)."""
    from jaxit.batch import batch_from_ids

    n = int(np.asarray(ids).size)
    t = max(n, pad_to or n)
    row = np.zeros((3, 1, t), np.int32)
    row[0, 0, :n], row[1, 0, :n], row[2, 0, :n] = ids, types, 1
    b = batch_from_ids(row[0], row[2], row[1], np.array([label], np.int32))
    out = jax.device_get(fn(params, b))
    return {k: np.asarray(v[:, 0, :n], np.float64) for k, v in out.items()}


def evaluate_baselines(encoder: Encoder, params: dict, encoded, names=BASELINES,
                       pooling: str = "cls", buckets=(), reduce: str = "sum") -> dict:
    """{name: `RationaleReport`} of each baseline on `encoded` rationales (`jaxit.interpret.
    rationales.EncodedRationale`); nothing is dropped, so only the soft scores' AP and the
    uniform-level FPR (S̃ ≥ 1/n) are meaningful (settings["drops_tokens"] is False)."""
    from jaxit.interpret.rationales import evaluate_example, summarize

    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown rationale baseline(s) {unknown}; choose from {BASELINES}")
    fn = jax.jit(lambda p, b: layer_baseline_scores(encoder, p, b, pooling, tuple(names)))
    num_outputs = int(np.shape(params["heads"]["final"]["out"]["kernel"])[-1])
    labels = {e.rationale.label for e in encoded}
    if "saliency" in names and not labels <= set(range(num_outputs)):
        raise ValueError(f"the rationales' gold labels {sorted(labels, key=str)} are not classes "
                         f"of this {num_outputs}-output model: the saliency baseline needs a "
                         "model fine-tuned on the task's own labels")
    evals = {n: [] for n in names}
    for e in encoded:
        n = int(e.input_ids.size)
        pad = min((b for b in buckets if b >= n), default=n)
        scores = example_baseline_scores(fn, params, e.input_ids, e.token_type_ids,
                                         int(e.rationale.label), pad)
        kept = np.ones_like(scores[names[0]], bool)
        for name in names:
            evals[name].append(evaluate_example(scores[name], kept, e.word_index,
                                                e.rationale.mask, e.rationale.guid,
                                                reduce=reduce))
    return {name: summarize(ev, None, {"baseline": name, "reduce": reduce, "pooling": pooling,
                                       "drops_tokens": False})
            for name, ev in evals.items()}
