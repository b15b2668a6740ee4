"""Depth and width together: exit heads on every layer AND AdapLeR's contribution predictors
in one model (the combination seed 002 names as future work). An easy example leaves after
a few layers; a long one runs on fewer tokens in every layer it does run.

Param tree (L layers)::

    {"encoder": <encoder params>,
     "heads": {"exits": <exit heads of layers 1..L-1, stacked [L-1]>,   # as early_exit
               "final": <exit head of layer L>,
               "lte":   {"kernel": [D, 1], "bias": [1]},                 # when lte=True
               "cp": <L stacked CPs>, "eta": [L], "theta": [L]}}        # as adapler

Training forward: AdapLeR's soft-removal forward (`adapler_forward`, λ = base·growth^epoch),
and the exit head of layer ℓ reads the pooled state of the tokens still kept after it
(`soft_pool`: [CLS], or the mean weighted by the soft keep exp(M), which at inference is
the mean of the kept tokens). Losses from that one forward:

    E         the early-exit strategy's loss over all L exits (`exit_losses`: joint,
              alternating, two_stage, pabee; + Σ_l J_l with LTE)
    L_CE      the final head's cross-entropy;  L_CP, L_LENGTH as in AdapLeR (eqs. 6, 8)
    main  = E + γ L_CP          -> encoder, exit heads, final head, CPs, LTE
    speed = L_CE + φ L_LENGTH   -> η, θ   (AdapLeR's speed objective, unchanged)

Recipes (`strategy`, see BUILD_NOTES for the measured comparison):
- joint / alternating / pabee, `init_from` a fine-tuned multi-exit run: AdapLeR's phase 3
  with the exit losses in place of the final head's (the exits keep learning while tokens
  go; the backbone adapts to both);
- two_stage with `stage1_fraction=0`, `init_from` a finished AdapLeR run: exits trained on
  the frozen AdapLeR model (encoder, final head, CPs, η, θ fixed; its never-exit answers
  are exactly AdapLeR's). With stage1_fraction > 0, stage 1 is AdapLeR's phase 3 itself.

Inference: the batched engine and `TokenDropRunner(policy=...)` run both at once (the policy
decides exits after each layer, the CPs the tokens of the next); `predict` is the
never-exit model with hard token dropping (λ = 1e20).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxit.encoders.transformer import Encoder
from jaxit.errors import ConfigError
from jaxit.heads import lte_certainty, pooled_exit_heads, stacked_heads
from jaxit.methods.adapler import (
    BETA,
    EVAL_LAMBDA,
    adapler_forward,
    adapler_terms,
    init_cp,
    lambda_at,
    speed_optimizer,
    split_objective_grads,
)
from jaxit.methods.base import Method, label_by_top_key
from jaxit.methods.early_exit import exit_losses, init_multi_exit, strategy_gates

STRATEGIES = ("joint", "alternating", "two_stage", "pabee")
GROUPS = {"encoder": "backbone", "heads/exits": "exits", "heads/final": "final",
          "heads/lte": "lte", "heads/cp": "cp", "heads/eta": "speed", "heads/theta": "speed"}


def init_depth_width(rng, encoder: Encoder, encoder_params: dict, num_outputs: int,
                     lte: bool = False, eta_init: float = 0.25,
                     theta_init: float = 1.0) -> dict:
    """Exit heads on every layer (+ LTE) and L CPs, η, θ on top of `encoder_params`."""
    cfg = encoder.config
    k_exit, k_cp = jax.random.split(rng)
    params = init_multi_exit(k_exit, encoder, encoder_params, num_outputs, lte=lte)
    L = cfg.num_layers
    params["heads"].update(cp=init_cp(k_cp, L, cfg.hidden_size),
                           eta=jnp.full((L,), eta_init, jnp.float32),
                           theta=jnp.full((L,), theta_init, jnp.float32))
    return params


def depth_width_forward(encoder: Encoder, params: dict, batch, lam, rng=None, theta_d=None,
                        beta: float = BETA, pooling: str = "cls") -> dict:
    """`adapler_forward` plus every layer's exit outputs: adds "outputs" [L, B, C] (layer
    ℓ+1's head on its pooled kept tokens; outputs[-1] = "logits") and, with an LTE module,
    "lte" [L, B]. Dropout in the heads only when `rng` is given."""
    r_fwd, r_head = (None, None) if rng is None else jax.random.split(rng)
    out = adapler_forward(encoder, params, batch, lam, r_fwd, theta_d, beta, pooling,
                          layer_features=True)
    heads = params["heads"]
    outputs, pooled = pooled_exit_heads(stacked_heads(heads), out["features"], r_head,
                                        encoder.config.hidden_dropout)
    out["outputs"] = outputs
    out["logits"] = outputs[-1]
    if "lte" in heads:
        out["lte"] = lte_certainty(heads["lte"], pooled)
    return out


def make_depth_width(encoder: Encoder, num_outputs: int, is_regression: bool, num_steps: int,
                     steps_per_epoch: int, *, strategy: str = "joint", lte: bool = False,
                     stage1_fraction: float = 0.0, exits_lr_scale: float = 1.0,
                     pooling: str = "cls", gamma: float = 5e-3, phi: float = 5e-4,
                     lambda_base: float = 10.0, lambda_growth: float = 10.0,
                     beta: float = BETA, eta_init: float = 0.25, theta_init: float = 1.0,
                     speed_lr: float = 5e-4, speed_warmup_fraction: float = 0.06,
                     speed_clip_norm: float = 1.0, cp_lr_scale: float = 1.0,
                     saliency_dir: str = "", name: str = "depth_width") -> Method:
    """A depth + width `Method` (see the module docstring); AdapLeR's options as in
    `make_adapler`, the exits' as in `make_early_exit`."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"config.method.strategy={strategy!r}: depth_width takes one of "
                          f"{', '.join(STRATEGIES)}")
    if is_regression:
        raise ConfigError("depth_width: AdapLeR's saliency targets need a gold class; "
                         "regression tasks are not supported")
    if encoder.config.num_layers < 2:
        raise ConfigError("depth_width needs at least 2 layers (exits before the last)")
    from jaxit.methods.adapler import make_adapler

    # AdapLeR's own checks on its options (and the saliency loader), one place
    adapler = make_adapler(encoder, num_outputs, False, num_steps, steps_per_epoch,
                           gamma=gamma, phi=phi, lambda_base=lambda_base,
                           lambda_growth=lambda_growth, beta=beta, cp_lr_scale=cp_lr_scale,
                           saliency_dir=saliency_dir)
    L = encoder.config.num_layers
    stage1_steps = round(stage1_fraction * num_steps) if strategy == "two_stage" else 0

    def init(rng, encoder_params):
        return init_depth_width(rng, encoder, encoder_params, num_outputs, lte, eta_init,
                                theta_init)

    def objectives(params, theta_d, batch, rng, step):
        if batch.token_targets is None:
            raise ValueError("depth_width training needs saliency targets: set "
                             "method.saliency_dir (python -m jaxit.interpret.saliency)")
        lam = lambda_at(step, steps_per_epoch, lambda_base, lambda_growth)
        out = depth_width_forward(encoder, params, batch, lam, rng, theta_d, beta, pooling)
        exit_loss, metrics = exit_losses(strategy, out["outputs"], out.get("lte"),
                                         jnp.asarray(batch.labels), step, stage1_steps, False)
        ce, l_cp, length, terms = adapler_terms(out, params, batch, lam)
        metrics = {**metrics, **terms}
        return (exit_loss, ce, l_cp, length), metrics

    def loss(params, batch, rng, step):
        (e, _, l_cp, _), metrics = objectives(params, jnp.ones((L,), jnp.float32), batch, rng,
                                              step)
        return e + gamma * l_cp, metrics

    def grads(params, batch, rng, step):
        return split_objective_grads(lambda p, t: objectives(p, t, batch, rng, step), params,
                                     L, (1.0, 0.0, gamma, 0.0), (0.0, 1.0, 0.0, phi))

    def predict(params, batch):
        return depth_width_forward(encoder, params, batch, EVAL_LAMBDA,
                                   pooling=pooling)["logits"]

    gates = strategy_gates(strategy, stage1_steps, has_exits=True, lte=lte)
    gates["cp"] = gates["speed"] = gates["backbone"]  # AdapLeR's half trains with the backbone
    lr_scale = {}
    if exits_lr_scale != 1.0:
        lr_scale["exits"] = float(exits_lr_scale)
    if cp_lr_scale != 1.0:
        lr_scale["cp"] = float(cp_lr_scale)
    return Method(
        name=name, encoder=encoder, is_regression=False, num_outputs=num_outputs, init=init,
        loss=loss, predict=predict,
        param_labels=lambda params: label_by_top_key(params, GROUPS, "backbone"),
        gates=gates, lr_scale=lr_scale, grads=grads,
        group_optimizers={"speed": speed_optimizer(num_steps, speed_lr, speed_warmup_fraction,
                                                   speed_clip_norm)},
        prepare_data=adapler.prepare_data,
        stage_starts=(stage1_steps,) if 0 < stage1_steps < num_steps else ())


def build_depth_width(mcfg, encoder: Encoder, num_outputs: int, is_regression: bool,
                      num_steps: int, steps_per_epoch: int | None = None) -> Method:
    """Registry builder: `method.strategy` (joint), lte, stage1_fraction (0),
    exits_lr_scale, pooling, and AdapLeR's options (see `build_adapler`)."""
    from jaxit.methods.early_exit import _opt

    floats = ("gamma", "phi", "lambda_base", "lambda_growth", "beta", "eta_init", "theta_init",
              "speed_lr", "speed_warmup_fraction", "speed_clip_norm", "cp_lr_scale",
              "stage1_fraction", "exits_lr_scale")
    defaults = {"gamma": 5e-3, "phi": 5e-4, "lambda_base": 10.0, "lambda_growth": 10.0,
                "beta": BETA, "eta_init": 0.25, "theta_init": 1.0, "speed_lr": 5e-4,
                "speed_warmup_fraction": 0.06, "speed_clip_norm": 1.0, "cp_lr_scale": 1.0,
                "stage1_fraction": 0.0, "exits_lr_scale": 1.0}
    options = {k: float(_opt(mcfg, k, defaults[k])) for k in floats}
    return make_depth_width(
        encoder, num_outputs, is_regression, num_steps, steps_per_epoch or num_steps,
        strategy=str(_opt(mcfg, "strategy", "joint")), lte=bool(_opt(mcfg, "lte", False)),
        pooling=str(_opt(mcfg, "pooling", "cls")),
        saliency_dir=str(_opt(mcfg, "saliency_dir", "")), **options)
