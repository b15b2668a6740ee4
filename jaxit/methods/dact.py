"""DACT-BERT (seeds 000/001): differentiable adaptive computation time over the layers.

Param tree (L layers, D hidden, C outputs; C = 1 for regression)::

    {"encoder": <encoder params>,
     "heads": {"exits": <exit heads of layers 1..L-1, stacked [L-1]>,   # as early_exit
               "final": <exit head of layer L>,
               "halting": {"kernel": [L, D, 1], "bias": [L, 1]}}}       # one unit per layer

so every tool for multi-exit models (layer-wise scores, the batch-1 runner, traces) works on
a DACT model unchanged; the halting units ride along.

Per layer n (1-based): y_n the exit head's output (softmax probabilities, or the regression
value), h_n = sigmoid(w_n . cls_n + b_n) the halting unit on the layer's raw [CLS] state
(with pooling="mean", the head and the halting unit read the mean of the real tokens'
states instead: `jaxit.heads.pool_features`).
With p_0 = 1 and a_0 = 0:

    a_n = y_n * p_{n-1} + a_{n-1} * (1 - p_{n-1})        p_n = h_n * p_{n-1}

so a_1 = y_1, every a_n is a convex mix of y_1..y_n (a probability vector for
classification) and p_n is non-increasing. a_L is the model's output.

Loss (stage 2): NLL of a_L, on log(max(a_L, 1e-8)) (the DACT reference code; MSE on a_L for
regression), plus tau * sum_{n<L} h_n averaged over the batch. The one deviation from the
paper's (and DESIGN's) tau * sum_{n<=L} h_n, and the one place it is explained: h_L only
forms p_L, which no a_n, no output and no exit decision uses, so a tau * h_L term would
only drive the last halting unit to 0 without changing the model; it is left out. The
`expected_layers` metric 1 + sum_{n<L} p_n is E[exit layer] under the halting
distribution.

Training (DESIGN §4): stage 1 fine-tunes backbone + last head on the last layer's task loss;
stage 2 trains everything with the DACT loss, on a warm-up/decay schedule of its own. s1 = round(stage1_fraction * num_steps); with
`init_from` a fine-tuned run (the reference setting: DACT starts from a converged backbone),
set stage1_fraction = 0. Halting units start with zero bias (the reference code): h = 0.5.

Inference: `jaxit.inference.policies.DACTPolicy` stops after layer n when the answer can no
longer change (classification: a_n[c*] (1 - p_n)^d >= a_n[c_ru] + p_n d with d = L - n layers
left; regression: p_n d range <= tol) and answers from a_n.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxit.batch import Batch
from jaxit.encoders.transformer import Encoder, mask_bias_from
from jaxit.heads import (
    halting_value,
    head_outputs,
    init_halting,
    pool_features,
    stacked_heads,
    task_loss,
)
from jaxit.methods.base import Method, label_by_top_key
from jaxit.methods.early_exit import _opt, init_multi_exit

GROUPS = {"encoder": "backbone", "heads/exits": "exits", "heads/final": "final",
          "heads/halting": "halting"}
LOG_FLOOR = 1e-8






def exit_values(outputs: jnp.ndarray, is_regression: bool) -> jnp.ndarray:
    """y_n from head outputs [..., C]: softmax probabilities, or the value ([..., 1])."""
    if is_regression:
        return outputs.astype(jnp.float32)
    return jax.nn.softmax(outputs.astype(jnp.float32), axis=-1)


def dact_update(a: jnp.ndarray, p: jnp.ndarray, y: jnp.ndarray, h: jnp.ndarray):
    """One step of the recurrence: a [B, C], p [B], y [B, C], h [B] -> (a_n, p_n)."""
    a = y * p[:, None] + a * (1.0 - p)[:, None]
    return a, h * p


def accumulate(y: jnp.ndarray, h: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The recurrence over stored per-layer values: y [L, B, C], h [L, B] -> (a [L, B, C],
    p [L, B]), a[n-1] = a_n and p[n-1] = p_n."""
    b, c = y.shape[1], y.shape[2]

    def step(carry, yh):
        a, p = dact_update(*carry, *yh)
        return (a, p), (a, p)

    init = (jnp.zeros((b, c), y.dtype), jnp.ones((b,), y.dtype))
    _, (a, p) = jax.lax.scan(step, init, (y, h.astype(y.dtype)))
    return a, p


def dact_forward(encoder: Encoder, params: dict, batch: Batch, is_regression: bool,
                 rng: jax.Array | None = None, pooling: str = "cls") -> dict:
    """Embedding, then ONE `lax.scan` over layers carrying (hidden, a, p).

    Returns {"a": [L, B, C] a_n, "p": [L, B] p_n, "h": [L, B] halting values,
             "outputs": [L, B, C] head outputs (logits or values)}. Dropout when `rng`.
    """
    cfg = encoder.config
    enc, heads = params["encoder"], params["heads"]
    r_embed, r_layers = (None, None) if rng is None else jax.random.split(rng)
    hidden = encoder.embed(enc, batch, r_embed)
    attention_mask = jnp.asarray(batch.attention_mask)
    bias = mask_bias_from(attention_mask, hidden.dtype)
    n, b = cfg.num_layers, hidden.shape[0]
    keys = None if rng is None else jax.random.split(r_layers, n)
    layers = None if cfg.shared_layers else enc["layers"]

    def step(carry, xs):
        h_state, a, p = carry
        lp, head, unit, key = xs
        lp = enc["layers"] if lp is None else lp
        k_block, k_head = (None, None) if key is None else jax.random.split(key)
        h_state = encoder.block(lp, h_state, bias, k_block)
        cls = pool_features(h_state, attention_mask, pooling)
        out, _ = head_outputs(head, h_state, attention_mask, pooling, k_head, cfg.hidden_dropout)
        halt = halting_value(unit, cls)
        a, p_next = dact_update(a, p, exit_values(out, is_regression), halt)
        return (h_state, a, p_next), (a, p_next, halt, out.astype(jnp.float32))

    num_outputs = heads["final"]["out"]["bias"].shape[-1]
    init = (hidden, jnp.zeros((b, num_outputs), jnp.float32), jnp.ones((b,), jnp.float32))
    xs = (layers, stacked_heads(heads), heads["halting"], keys)
    _, (a, p, h, outs) = jax.lax.scan(step, init, xs, length=n)
    return {"a": a, "p": p, "h": h, "outputs": outs}


def dact_loss_terms(a_last: jnp.ndarray, labels: jnp.ndarray, is_regression: bool):
    """Per-example task loss on a_L [B, C]: NLL of the mixed probabilities, or squared error."""
    if is_regression:
        return jnp.square(a_last[:, 0] - labels.astype(a_last.dtype))
    logp = jnp.log(jnp.maximum(a_last, LOG_FLOOR))
    return -jnp.take_along_axis(logp, labels.astype(jnp.int32)[:, None], axis=-1)[:, 0]


def answer_outputs(a: jnp.ndarray, is_regression: bool) -> jnp.ndarray:
    """What DACT's `predict` returns from a_n: log-probabilities [B, C] (argmax = argmax a_n)
    or the value [B]."""
    if is_regression:
        return a[..., 0]
    return jnp.log(jnp.maximum(a, LOG_FLOOR))


def make_dact(encoder: Encoder, num_outputs: int, is_regression: bool, num_steps: int,
              tau: float = 5e-3, stage1_fraction: float = 0.5, halting_bias: float = 0.0,
              exits_lr_scale: float = 1.0, pooling: str = "cls", name: str = "dact") -> Method:
    """A DACT-BERT `Method` (see the module docstring)."""
    if tau < 0:
        raise ValueError(f"dact: tau must be >= 0, got {tau}")
    if is_regression and num_outputs != 1:
        raise ValueError(f"regression needs num_outputs == 1, got {num_outputs}")
    cfg = encoder.config
    stage1_steps = round(stage1_fraction * num_steps)

    def init(rng, encoder_params):
        k_heads, k_halt = jax.random.split(rng)
        params = init_multi_exit(k_heads, encoder, encoder_params, num_outputs)
        params["heads"]["halting"] = init_halting(k_halt, cfg.num_layers, cfg.hidden_size,
                                                  halting_bias)
        return params

    def loss(params, batch, rng, step):
        out = dact_forward(encoder, params, batch, is_regression, rng, pooling)
        labels = jnp.asarray(batch.labels)
        last = task_loss(out["outputs"][-1], labels, is_regression).mean()
        task = dact_loss_terms(out["a"][-1], labels, is_regression).mean()
        ponder = out["h"][:-1].sum(axis=0).mean()
        dact = task + jnp.float32(tau) * ponder
        value = jnp.where(jnp.asarray(step) < stage1_steps, last, dact)
        metrics = {"loss_last": last, "loss_dact_task": task, "ponder": ponder,
                   "expected_layers": 1.0 + out["p"][:-1].sum(axis=0).mean()}
        return value, metrics

    def predict(params, batch):
        a = dact_forward(encoder, params, batch, is_regression, None, pooling)["a"][-1]
        return answer_outputs(a, is_regression)

    gates: dict = {"backbone": "train", "final": "train",
                   "exits": lambda s: s >= stage1_steps, "halting": lambda s: s >= stage1_steps}
    if stage1_steps <= 0:
        gates = {k: "train" for k in gates}
    if cfg.num_layers == 1:
        gates.pop("exits")
    lr_scale = {} if exits_lr_scale == 1.0 else {"exits": float(exits_lr_scale),
                                                 "halting": float(exits_lr_scale)}
    return Method(
        name=name, encoder=encoder, is_regression=is_regression, num_outputs=num_outputs,
        init=init, loss=loss, predict=predict,
        param_labels=lambda params: label_by_top_key(params, GROUPS, "backbone"),
        gates=gates, lr_scale=lr_scale,
        stage_starts=(stage1_steps,) if stage1_steps > 0 else ())


def build_dact(mcfg, encoder: Encoder, num_outputs: int, is_regression: bool,
               num_steps: int) -> Method:
    """Registry builder. Options of `mcfg`: tau (default 5e-3), stage1_fraction (0.5),
    halting_bias (0.0), exits_lr_scale (1.0: lr multiplier of the exits and halting units)."""
    return make_dact(encoder, num_outputs, is_regression, num_steps,
                     tau=float(_opt(mcfg, "tau", 5e-3)),
                     stage1_fraction=float(_opt(mcfg, "stage1_fraction", 0.5)),
                     halting_bias=float(_opt(mcfg, "halting_bias", 0.0)),
                     exits_lr_scale=float(_opt(mcfg, "exits_lr_scale", 1.0)),
                     pooling=str(_opt(mcfg, "pooling", "cls")))
