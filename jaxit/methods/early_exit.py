"""Multi-exit models: an exit head on every layer's [CLS], optional learning-to-exit (LTE),
and the training strategies of DeeBERT, PABEE, BERxiT and ELBERT as one `Method` builder.

Param tree (L layers, D hidden, C outputs; C = 1 for regression)::

    {"encoder": <encoder params>,
     "heads": {"exits": <exit heads of layers 1..L-1, stacked on a leading [L-1] axis>,  # not ELBERT
               "final": <exit head of layer L>,             # same layout as `finetune`
               "lte": {"kernel": [D, 1], "bias": [1]},      # when lte=True
               "loss_weights": [L-1]}}                      # ELBERT's t_i

A "bert" exit head is pooler (dense D->D, tanh) + dropout + linear D->C on the layer's
[CLS] state (or, with pooling="mean", the mean of its real tokens:
`jaxit.heads.pool_features`); every such pooler starts from the checkpoint's pooler when it has one (DeeBERT's released code; BERxiT's does the
same). The last layer's exit head *is* the model's classifier, so there is no separate,
untrained last off-ramp to exit through.

Learning-to-exit (BERxiT, seed 003 §4.2): one module shared by all layers,
u_l = sigmoid(c . pooled_l + b) on the exit head's pooled [CLS] (after tanh, before dropout);
target (stop-gradient) 1[argmax g_l = y] or, for regression, 1 - tanh|g_l - y|;
J_l = (u_l - target_l)^2.

Strategies (`method_cfg.strategy`); L_i is the mean task loss of exit i:

- ``joint``: sum_i L_i, everything trained.
- ``two_stage`` (DeeBERT): steps [0, s1) train backbone + last head on L_L; steps [s1, end)
  train the other exits on sum_{i<L} L_i with backbone and last head frozen.
  s1 = round(stage1_fraction * num_steps) (default 0.5: the same number of steps per stage).
  Each stage has its own warm-up/decay learning-rate schedule (`Method.stage_starts`), as
  DeeBERT's code trains stage 2 with the same learning rate and epochs as stage 1.
- ``alternating`` (BERxiT): step parity (0-based step, the paper's iterations are 1-based):
  even steps (paper: odd iterations) L_L on backbone + last head; odd steps sum_i L_i on
  everything. Matches the released code (`step_num % 2 == 0` -> last loss only).
- ``pabee``: sum_i i*L_i / sum_i i.
- ``elbert``: sum_i w_i L_i, w_i = sigmoid(t_i) (i < L, t_i init 4), w_L = L - sum_{i<L} w_i,
  with ONE classifier shared by every layer (seed 004: p_i = Classifier(h_i), "no additional
  parameters"): the params hold "final" and no "exits", and `heads.stacked_heads` gives
  every layer that head. `elbert_heads="per_layer"` keeps a head per layer (not ELBERT's).
  t has its own optimizer group "loss_weights" with lr_scale `weights_lr_scale`
  (default 500 = the released code's 1e-2 over the HF default lr 2e-5).
- ``fastbert`` (self-distillation): stage 1 as Two-stage; stage 2 trains the other exits on
  sum_{i<L} KL(p_L || p_i) with the final layer's distribution as a stop-gradient teacher
  (regression: squared distance to the final value), backbone and last head frozen, exits
  at `distill_lr_scale` (default 10, the released code's 10x). Every head, the final one
  (the teacher) included, is FastBERT's small self-attention classifier (`head="attention"`,
  `jaxit.heads.attention_head`); `head="bert"` gives BERT-style heads instead. Exit with
  `NormalizedEntropyPolicy` ("speed").

``head`` ("bert" or "attention") picks the exit heads' kind for any strategy; the default is
"attention" for ``fastbert`` and "bert" otherwise. With attention heads the LTE module reads
their W-wide pooled state.

``lte=True`` adds the LTE loss to every step's loss, in every strategy: sum_l mean_batch J_l,
except in Two-stage and FastBERT, where it follows the paper's substitution L_i -> L_i + J_i
within each stage (stage 1: J_L only, so the backbone never learns from exits that are not
trained yet; stage 2: sum_{i<L} J_i). For Joint and Alternating's all-exit steps the sum is
exactly that substitution; on Alternating's last-layer steps it follows DESIGN ("one step trains the
last loss + LTE, the next the other exits' losses + LTE"), and the LTE module is updated on
every step. (Paper's literal substitution would give L_L + J_L there.)

Optimizer groups (see `jaxit.methods.base`): "backbone" (encoder), "final" (last head),
"exits" (other heads), "lte", "loss_weights". Freezing is done by gates only, never copies.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxit.batch import Batch
from jaxit.encoders.transformer import Encoder, mask_bias_from
from jaxit.heads import (
    HEAD_KINDS,
    all_exit_heads,
    halting_value,
    head_outputs,
    head_width,
    init_exit_heads,
    init_lte,
    lte_certainty,
    pool_features,
    stacked_heads,
    task_loss,
)
from jaxit.methods.base import Method, label_by_top_key

STRATEGIES = ("joint", "two_stage", "alternating", "pabee", "elbert", "fastbert")
GROUPS = {"encoder": "backbone", "heads/exits": "exits", "heads/final": "final",
          "heads/lte": "lte", "heads/loss_weights": "loss_weights"}


class LayerOutputs(NamedTuple):
    """Every layer's exit outputs for a batch.

    outputs: [L, B, C] logits (classification) or values (regression, C = 1)
    lte:     [L, B] LTE certainty u_l, or None when the model has no LTE module
    pooled:  [L, B, D] the exit heads' pooled states ([L, B, W] for attention heads)
    halting: [L, B] DACT halting values h_l (params with heads["halting"]), or None
    """

    outputs: jnp.ndarray
    lte: jnp.ndarray | None
    pooled: jnp.ndarray
    halting: jnp.ndarray | None = None


# ----------------------------------------------------------------------------- params








def init_multi_exit(rng, encoder: Encoder, encoder_params: dict, num_outputs: int,
                    lte: bool = False, loss_weights: bool = False, t_init: float = 4.0,
                    head: str = "bert"):
    """Params for a multi-exit model on top of `encoder_params`, heads of kind `head`."""
    cfg = encoder.config
    k_heads, k_lte = jax.random.split(rng)
    stacked = init_exit_heads(k_heads, cfg.num_layers, cfg.hidden_size, num_outputs,
                              encoder_params.get("pooler"), kind=head)
    heads = {"exits": jax.tree.map(lambda x: x[:-1], stacked),
             "final": jax.tree.map(lambda x: x[-1], stacked)}
    if lte:
        heads["lte"] = init_lte(k_lte, head_width(heads["final"]))
    if loss_weights:
        heads["loss_weights"] = jnp.full((cfg.num_layers - 1,), t_init, jnp.float32)
    return {"encoder": encoder_params, "heads": heads}


# ----------------------------------------------------------------------------- forward


def all_layer_outputs(encoder: Encoder, params: dict, batch: Batch,
                      rng: jax.Array | None = None, pooling: str = "cls") -> LayerOutputs:
    """Every layer's exit-head outputs (and LTE certainty) in one forward pass.

    Dropout (encoder and heads) only when `rng` is given. jit-able; use it for layer-wise
    scores, batched evaluation and to simulate exit policies exactly.
    """
    r_enc, r_head = (None, None) if rng is None else jax.random.split(rng)
    mask = mask_bias_from(jnp.asarray(batch.attention_mask))
    hidden = encoder.forward_all(params["encoder"], batch, r_enc, mask)["hidden"]
    attention_mask = jnp.asarray(batch.attention_mask)
    heads = params["heads"]
    outputs, pooled = all_exit_heads(stacked_heads(heads), hidden, attention_mask, pooling,
                                     r_head, encoder.config.hidden_dropout)
    u = lte_certainty(heads["lte"], pooled) if "lte" in heads else None
    halt = None
    if "halting" in heads:  # DACT: one halting unit per layer on the raw [CLS] state
        cls = pool_features(hidden, attention_mask, pooling)  # [L, B, D]
        halt = jax.vmap(halting_value)(heads["halting"], cls)
    return LayerOutputs(outputs, u, pooled, halt)


def lte_targets(outputs: jnp.ndarray, labels: jnp.ndarray, is_regression: bool):
    """Stop-gradient LTE targets [L, B] from outputs [L, B, C]."""
    outputs = jax.lax.stop_gradient(outputs)
    if is_regression:
        err = jnp.abs(outputs[..., 0] - labels.astype(outputs.dtype)[None])
        return 1.0 - jnp.tanh(err)
    correct = jnp.argmax(outputs, axis=-1) == labels.astype(jnp.int32)[None]
    return correct.astype(outputs.dtype)


def elbert_weights(t: jnp.ndarray, num_layers: int) -> jnp.ndarray:
    """ELBERT's loss weights [L]: sigmoid(t_i) for i < L and L - sum for the last."""
    w = jax.nn.sigmoid(t)
    return jnp.concatenate([w, (num_layers - w.sum())[None]])


def exit_losses(strategy: str, outputs: jnp.ndarray, lte: jnp.ndarray | None,
                labels: jnp.ndarray, step, stage1_steps: int, is_regression: bool,
                loss_weights: jnp.ndarray | None = None) -> tuple[jnp.ndarray, dict]:
    """The strategy's training loss from every layer's outputs [L, B, C] (and LTE
    certainties [L, B] or None) -> (scalar loss, metrics); see the module docstring."""
    step = jnp.asarray(step)
    n_layers = outputs.shape[0]
    per_layer = task_loss(outputs, labels, is_regression).mean(axis=1)  # [L]
    last, total = per_layer[-1], per_layer.sum()
    if strategy == "joint":
        main = total
    elif strategy == "two_stage":
        main = jnp.where(step < stage1_steps, last, total - last)
    elif strategy == "alternating":
        main = jnp.where(step % 2 == 0, last, total)
    elif strategy == "fastbert":
        teacher = jax.lax.stop_gradient(outputs[-1])
        student = outputs[:-1]
        if is_regression:
            distill = jnp.square(student[..., 0] - teacher[None, :, 0]).mean(axis=1)
        else:
            log_t = jax.nn.log_softmax(teacher.astype(jnp.float32), axis=-1)
            log_s = jax.nn.log_softmax(student.astype(jnp.float32), axis=-1)
            distill = (jnp.exp(log_t)[None] * (log_t[None] - log_s)).sum(-1).mean(axis=1)
        main = jnp.where(step < stage1_steps, last, distill.sum().astype(last.dtype))
    elif strategy == "pabee":
        coef = jnp.arange(1, n_layers + 1, dtype=per_layer.dtype)
        main = (coef * per_layer).sum() / coef.sum()
    elif strategy == "elbert":
        w = elbert_weights(loss_weights, n_layers)
        main = (w.astype(per_layer.dtype) * per_layer).sum()
    else:
        raise ValueError(f"unknown early-exit strategy {strategy!r}; choose from {STRATEGIES}")
    metrics = {"loss_last": last, "loss_exits_mean": per_layer.mean(), "loss_main": main}
    value = main
    if lte is not None:
        target = lte_targets(outputs, labels, is_regression)
        j_layers = jnp.square(lte - target).mean(axis=1)  # [L]
        j = j_layers.sum()
        if strategy in ("two_stage", "fastbert"):  # L_i -> L_i + J_i within each stage
            j = jnp.where(step < stage1_steps, j_layers[-1], j - j_layers[-1])
        value = value + j
        metrics["loss_lte"] = j
    return value, metrics


def strategy_gates(strategy: str, stage1_steps: int, has_exits: bool = True,
                   lte: bool = False) -> dict:
    """When each group trains under `strategy`: "backbone", "final", "exits" (when the
    model has separate exit heads), "lte"."""
    gates: dict = {"backbone": "train", "final": "train", "exits": "train"}
    if strategy in ("two_stage", "fastbert"):
        gates = {"backbone": lambda s: s < stage1_steps, "final": lambda s: s < stage1_steps,
                 "exits": lambda s: s >= stage1_steps}
    elif strategy == "alternating":
        gates = {"backbone": "train", "final": "train", "exits": lambda s: s % 2 == 1}
    if not has_exits:
        gates.pop("exits")
    if lte:
        gates["lte"] = "train"
    return gates


# ----------------------------------------------------------------------------- method


def _opt(mcfg, key, default):
    if mcfg is None:
        return default
    try:
        value = mcfg.get(key, default)
    except AttributeError:
        value = getattr(mcfg, key, default)
    return default if value is None else value


def make_early_exit(encoder: Encoder, num_outputs: int, is_regression: bool, num_steps: int,
                    strategy: str = "joint", lte: bool = False, stage1_fraction: float = 0.5,
                    t_init: float = 4.0, weights_lr_scale: float = 500.0,
                    distill_lr_scale: float = 10.0, exits_lr_scale: float = 1.0,
                    pooling: str = "cls", elbert_heads: str = "shared",
                    head: str | None = None, name: str | None = None) -> Method:
    """A multi-exit `Method` trained with `strategy` (see the module docstring); `head`:
    the exit heads' kind (None: "attention" for fastbert, else "bert")."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown early-exit strategy {strategy!r}; choose from {STRATEGIES}")
    head = head or ("attention" if strategy == "fastbert" else "bert")
    if head not in HEAD_KINDS:
        raise ValueError(f"method.head must be one of {HEAD_KINDS}, got {head!r}")
    cfg = encoder.config
    n_layers = cfg.num_layers
    if is_regression and num_outputs != 1:
        raise ValueError(f"regression needs num_outputs == 1, got {num_outputs}")
    stage1_steps = round(stage1_fraction * num_steps)
    use_weights = strategy == "elbert"
    if elbert_heads not in ("shared", "per_layer"):
        raise ValueError(f"elbert_heads must be 'shared' or 'per_layer', got {elbert_heads!r}")
    shared = use_weights and elbert_heads == "shared" and n_layers > 1

    def init(rng, encoder_params):
        params = init_multi_exit(rng, encoder, encoder_params, num_outputs, lte=lte,
                                 loss_weights=use_weights, t_init=t_init, head=head)
        if shared:  # ELBERT: one classifier for every layer, "final" (heads.stacked_heads)
            del params["heads"]["exits"]
        return params

    def loss(params, batch, rng, step):
        out = all_layer_outputs(encoder, params, batch, rng, pooling)
        return exit_losses(strategy, out.outputs, out.lte, jnp.asarray(batch.labels), step,
                           stage1_steps, is_regression, params["heads"].get("loss_weights"))

    def predict(params, batch):
        # The static full model: the encoder and the last layer's head only.
        mask = mask_bias_from(jnp.asarray(batch.attention_mask))
        hidden = encoder.forward_all(params["encoder"], batch, None, mask)["hidden"][-1]
        out, _ = head_outputs(params["heads"]["final"], hidden,
                              jnp.asarray(batch.attention_mask), pooling)
        return out[:, 0] if is_regression else out

    def param_labels(params):
        return label_by_top_key(params, GROUPS, "backbone")

    gates = strategy_gates(strategy, stage1_steps, has_exits=n_layers > 1 and not shared,
                           lte=lte)
    lr_scale = {}
    if n_layers > 1 and not shared and exits_lr_scale != 1.0:
        lr_scale["exits"] = float(exits_lr_scale)
    if strategy == "fastbert" and n_layers > 1:
        lr_scale["exits"] = float(distill_lr_scale) * float(exits_lr_scale)
    if use_weights:
        gates["loss_weights"] = "train"
        lr_scale["loss_weights"] = float(weights_lr_scale)

    return Method(
        name=name or f"early_exit/{strategy}" + ("+lte" if lte else ""),
        encoder=encoder, is_regression=is_regression, num_outputs=num_outputs,
        init=init, loss=loss, predict=predict, param_labels=param_labels, gates=gates,
        lr_scale=lr_scale,
        stage_starts=(stage1_steps,) if strategy in ("two_stage", "fastbert") else (),
    )


# Default strategy per registered name.
ALIASES = {"early_exit": "joint", "deebert": "two_stage", "berxit": "alternating",
           "pabee": "pabee", "elbert": "elbert", "fastbert": "fastbert"}


def build_early_exit(mcfg, encoder: Encoder, num_outputs: int, is_regression: bool,
                     num_steps: int) -> Method:
    """Registry builder. Options of `mcfg`: strategy, lte, stage1_fraction, t_init,
    weights_lr_scale, distill_lr_scale, exits_lr_scale, pooling, elbert_heads, head (defaults
    in `make_early_exit`; the strategy defaults
    by method name: early_exit joint, deebert two_stage, berxit alternating, pabee, elbert,
    fastbert)."""
    name = _opt(mcfg, "name", "early_exit")
    strategy = _opt(mcfg, "strategy", ALIASES.get(name, "joint"))
    return make_early_exit(
        encoder, num_outputs, is_regression, num_steps, strategy=strategy,
        lte=bool(_opt(mcfg, "lte", False)),
        stage1_fraction=float(_opt(mcfg, "stage1_fraction", 0.5)),
        t_init=float(_opt(mcfg, "t_init", 4.0)),
        weights_lr_scale=float(_opt(mcfg, "weights_lr_scale", 500.0)),
        distill_lr_scale=float(_opt(mcfg, "distill_lr_scale", 10.0)),
        exits_lr_scale=float(_opt(mcfg, "exits_lr_scale", 1.0)),
        pooling=str(_opt(mcfg, "pooling", "cls")),
        elbert_heads=str(_opt(mcfg, "elbert_heads", "shared")),
        head=_opt(mcfg, "head", None) or None,
    )
