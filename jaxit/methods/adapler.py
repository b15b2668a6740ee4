"""AdapLeR (seed 002): contribution predictors, soft token removal, two objectives.

Param tree (L layers, D hidden, C outputs, H = 32 the CP width)::

    {"encoder": <encoder params>,
     "heads": {"final": <exit head of layer L, as in finetune>,
               "cp": {"hidden": {"kernel": [L, D, H], "bias": [L, H]},
                      "out":    {"kernel": [L, H, 1], "bias": [L, 1]}},
               "eta":   [L] float32,    # η^ℓ, init 0.25, kept in [0.01, 1]
               "theta": [L] float32}}   # θ^ℓ, init 1 ([CLS] amplification of the targets)

CP ℓ (0-based, ℓ = 0..L-1) sits in FRONT of layer ℓ + 1: CP 0 scores the embedding output,
CP ℓ the output of layer ℓ. There is no CP after the last layer.

Forward with soft removal (training; `adapler_forward`), per layer ℓ, carrying the additive
attention mask M [B, T] (0 = kept, MASK_MIN = removed; starts as BERT's pad mask):

    k      = exp(M)                               soft keep: [CLS] 1, pads 0, others in (0, 1]
    S̃^ℓ    = contribution_scores(cp_ℓ, h, k)      CP softmax over the kept tokens
    S̃'^ℓ   = amplify_cls(S̃^ℓ, θ_d^ℓ)              eq. 9; θ_d ≡ 1, so S̃' = S̃ (appendix B)
    n      = Σ_i k_i                              soft count, [CLS] included
    δ^ℓ    = η^ℓ / n                              keep_threshold
    m      = soft_removal(S̃'^ℓ, δ^ℓ, λ, β)        eq. 4, on real non-[CLS] tokens only
    M      = max(M + m, MASK_MIN)                 accumulated, clipped like BERT's pad mask
    h      = layer_{ℓ+1}(h, M)

then the exit head on the last layer's [CLS]. exp(M) is the running soft kept-mask (the
authors' code multiplies its kept-mask by exp(m) every layer: the same numbers).

Losses (eqs. 5-8):

    L_CE      cross-entropy of the final head
    L_CP      Σ_ℓ (L - ℓ) KL(Ŝ^ℓ || S̃^ℓ)        Ŝ^ℓ = amplify_cls(normalised saliency, θ^ℓ), eq. 7
    L_LENGTH  Σ_ℓ Σ_i exp(M_i^ℓ)                 the tokens layer ℓ+1 runs on (soft), [CLS] incl.
    main   = L_CE + γ L_CP          -> encoder, final head, CPs
    speed  = L_CE + φ L_LENGTH      -> η, θ (their own optimizer: AdamW lr 5e-4, 6 % warm-up,
                                       linear decay, clip 1, no weight decay; η clipped to
                                       [0.01, 1] after each step)

θ is not on the computation path of the speed objective; its gradient is the gradient w.r.t.
the dummy θ_d (which enters S̃ as θ enters Ŝ) divided by θ (appendix B, eq. 14). All three
losses come from ONE forward pass (`jax.vjp`) and two cotangents: (1, γ, 0) for the main
params and (1, 0, φ) for η and θ (`make_adapler` builds a `Method` with its own `grads`).

Inference: `hard_keep` — [CLS] and the tokens with S̃ ≥ δ^ℓ survive; `predict` runs the
soft-mask forward at λ = 1e20, which masks exactly the tokens hard dropping removes.

Details fixed by the authors' released code (DESIGN §4) and followed here: CP = Dense(32) →
GELU → Dense(1) → softmax over [CLS] + kept tokens (the softmax weights each token by its
soft keep value); [CLS] is outside the removable set, [SEP] is not; n = kept count + 1 for
[CLS]; λ = 10·10^epoch, β = 0.1; saliencies stored unnormalised and normalised over all real
tokens ([CLS] + tokens + [SEP]) at loss time; KL with both sides floored at 1e-7 (Keras).
Where we differ: (1) θ^ℓ enters the targets of EVERY layer (eq. 7; their code has no θ for
ℓ = 0); (2) the soft-removal value is added unscaled (their code multiplies it by the soft
kept-mask, which shrinks the penalty of half-removed tokens) so that exp(M) is exactly the
product of the exp(m); (3) θ is floored at 1e-3 where it scales or divides (their
max(0.001, θ)).
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxit.batch import Batch
from jaxit.encoders.transformer import MASK_MIN, Encoder, _gelu_erf, dense, mask_bias_from
from jaxit.heads import exit_head, init_exit_head, pool_features, task_loss
from jaxit.methods.base import Method, label_by_top_key

CP_HIDDEN = 32
ETA_INIT, ETA_MIN, ETA_MAX = 0.25, 0.01, 1.0
THETA_INIT, THETA_FLOOR = 1.0, 1e-3
BETA = 0.1
KL_EPS = 1e-7  # Keras' kl_divergence clips both distributions to [1e-7, 1]
EVAL_LAMBDA = 1e20  # "effectively infinite" λ of the authors' soft-mask evaluation


# ----------------------------------------------------------------------------- params


def init_cp(rng: jax.Array, num_layers: int, hidden: int, cp_hidden: int = CP_HIDDEN) -> dict:
    """L stacked CPs: kernels normal(0.02) (BERT's initializer), zero biases."""
    k1, k2 = jax.random.split(rng)
    return {"hidden": {"kernel": 0.02 * jax.random.normal(k1, (num_layers, hidden, cp_hidden)),
                       "bias": jnp.zeros((num_layers, cp_hidden), jnp.float32)},
            "out": {"kernel": 0.02 * jax.random.normal(k2, (num_layers, cp_hidden, 1)),
                    "bias": jnp.zeros((num_layers, 1), jnp.float32)}}


def init_adapler_heads(rng: jax.Array, num_layers: int, hidden: int, num_outputs: int,
                       pooler: dict | None = None, eta_init: float = ETA_INIT,
                       theta_init: float = THETA_INIT) -> dict:
    """{"final", "cp", "eta", "theta"} (see the module docstring)."""
    k_head, k_cp = jax.random.split(rng)
    return {"final": init_exit_head(k_head, hidden, num_outputs, pooler),
            "cp": init_cp(k_cp, num_layers, hidden),
            "eta": jnp.full((num_layers,), eta_init, jnp.float32),
            "theta": jnp.full((num_layers,), theta_init, jnp.float32)}


def cp_layer(params: dict, l) -> dict:
    """CP l's params {"hidden": {kernel [D, H], bias [H]}, "out": {kernel [H, 1], bias [1]}}
    (l = 0 is the CP in front of layer 1). `params`: the full AdapLeR params, or their
    "cp" sub-tree."""
    cp = params["heads"]["cp"] if "heads" in params else params
    return jax.tree.map(lambda x: x[l], cp)


# ----------------------------------------------------------------------------- CP scores


def contribution_logits(cp_l: dict, hidden: jnp.ndarray) -> jnp.ndarray:
    """Dense(H) → GELU → Dense(1) per token: hidden [B, T, D] -> logits [B, T] float32."""
    z = _gelu_erf(dense(cp_l["hidden"], hidden))
    return dense(cp_l["out"], z)[..., 0].astype(jnp.float32)


def contribution_scores(cp_l: dict, hidden: jnp.ndarray, keep: jnp.ndarray) -> jnp.ndarray:
    """S̃ [B, T]: the CP's softmax over the kept tokens (§3.1).

    S̃_i = k_i exp(z_i) / Σ_j k_j exp(z_j), z = CP logits, k = `keep` [B, T] float (1 kept,
    0 removed or padding; values in between are the soft kept-mask of training) with k_0
    forced to 1: [CLS] (position 0) always takes part, whatever `keep` says there. This is
    the authors' code (softmax over all positions, times [1, kept-mask[1:]], renormalised),
    computed as a log-domain softmax of z + log k. Removed tokens get exactly 0.
    """
    chex.assert_rank(hidden, 3)
    chex.assert_equal_shape([hidden[..., 0], keep])
    k = jnp.asarray(keep, jnp.float32)
    log_keep = jnp.where(k > 0, jnp.log(jnp.where(k > 0, k, 1.0)), -jnp.inf)
    return scores_from_log_keep(cp_l, hidden, log_keep)


def scores_from_log_keep(cp_l: dict, hidden: jnp.ndarray, log_keep: jnp.ndarray) -> jnp.ndarray:
    """`contribution_scores` with log k given (training passes the accumulated additive mask
    M, k = exp(M), which keeps gradients finite where k underflows). [CLS] gets log k = 0."""
    z = contribution_logits(cp_l, hidden)
    return jax.nn.softmax(z + log_keep.at[:, 0].set(0.0), axis=-1)


def amplify_cls(scores: jnp.ndarray, theta) -> jnp.ndarray:
    """Eq. 7 (targets, with θ) and eq. 9 (the dummy θ_d on S̃): scales position 0 ([CLS])
    by max(θ, 1e-3) and renormalises. scores [B, T] (non-negative), theta scalar or [B]."""
    theta = jnp.maximum(jnp.asarray(theta, jnp.float32), THETA_FLOOR)
    theta = jnp.reshape(theta, (-1, 1)) if theta.ndim else theta
    scaled = scores.at[:, :1].multiply(theta)
    return scaled / jnp.maximum(scaled.sum(-1, keepdims=True), 1e-30)


def normalise_saliency(saliency: jnp.ndarray, attention_mask: jnp.ndarray) -> jnp.ndarray:
    """Raw saliency [B, T] -> a distribution over each example's real tokens ([CLS] + tokens
    + [SEP]); 0 on padding. An all-zero row becomes uniform over its real tokens."""
    real = jnp.asarray(attention_mask, jnp.float32)
    s = jnp.maximum(jnp.asarray(saliency, jnp.float32), 0.0) * real
    total = s.sum(-1, keepdims=True)
    uniform = real / jnp.maximum(real.sum(-1, keepdims=True), 1.0)
    return jnp.where(total > 0, s / jnp.where(total > 0, total, 1.0), uniform)


def saliency_targets(saliency: jnp.ndarray, attention_mask: jnp.ndarray, theta) -> jnp.ndarray:
    """Ŝ^ℓ (eq. 7): the normalised saliency with [CLS] amplified by θ^ℓ. theta: scalar."""
    return amplify_cls(normalise_saliency(saliency, attention_mask), theta)


def kl_divergence(target: jnp.ndarray, scores: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Inclusive KL(Ŝ || S̃) per example (eq. 6, appendix A): Σ_i Ŝ_i log(Ŝ_i / S̃_i) over
    `mask`ed tokens, both floored at 1e-7 (Keras). [B, T] x3 -> [B]."""
    p = jnp.clip(target, KL_EPS, 1.0)
    q = jnp.clip(scores, KL_EPS, 1.0)
    return jnp.sum(jnp.where(mask > 0, p * (jnp.log(p) - jnp.log(q)), 0.0), axis=-1)


# ----------------------------------------------------------------------------- removal


def keep_threshold(eta_l, n_kept) -> jnp.ndarray:
    """δ^ℓ = η^ℓ / n (§3.2), n = tokens still kept, [CLS] included. Broadcasts."""
    return jnp.asarray(eta_l, jnp.float32) / jnp.asarray(n_kept, jnp.float32)


def hard_keep(scores: jnp.ndarray, keep: jnp.ndarray, eta_l) -> jnp.ndarray:
    """The inference rule (§3.2): scores [B, T] = S̃ over the kept tokens, keep [B, T] (0/1,
    [CLS] at position 0) -> new keep [B, T] float32. [CLS] is always kept; another token is
    kept iff it was kept and S̃_i >= δ = η / n with n = Σ keep ([CLS] counted once)."""
    chex.assert_equal_shape([scores, keep])
    k = (jnp.asarray(keep) > 0).at[:, 0].set(True)
    n = k.sum(-1, keepdims=True)
    new = k & (scores >= keep_threshold(eta_l, n))
    return new.at[:, 0].set(True).astype(jnp.float32)


def soft_removal(scores: jnp.ndarray, delta, lam, beta=BETA) -> jnp.ndarray:
    """Eq. 4: the (non-positive) mask increment m for scores S̃ [B, T], threshold δ ([B, 1]
    or scalar), slope λ > 0, leak 0 < β < 0.1:

        S̃ <  δ:  m = λ_adj (S̃ - δ) - β/λ,     λ_adj = λ / δ        (removal zone)
        S̃ >= δ:  m = (S̃ - 1) β / ((1 - δ) λ)                       (kept zone, ~0)

    Both zones equal -β/λ at S̃ = δ (continuous). As λ grows, zone 1 goes to -inf and zone
    2 to 0: a hard cut at δ. δ is floored at 1e-30 and 1 - δ at 1e-7 so that neither
    branch (jnp.where evaluates both) can make an inf or NaN gradient.
    """
    lam = jnp.asarray(lam, jnp.float32)
    delta = jnp.asarray(delta, jnp.float32)
    s = jnp.asarray(scores, jnp.float32)
    safe_delta = jnp.maximum(delta, 1e-30)
    removal = (lam / safe_delta) * (s - delta) - beta / lam
    kept = (s - 1.0) * beta / (jnp.maximum(1.0 - delta, 1e-7) * lam)
    return jnp.where(s < delta, removal, kept)


def lambda_at(step, steps_per_epoch: int, base: float = 10.0, growth: float = 10.0):
    """λ of the soft removal at a training step: base · growth^epoch, epoch = step //
    steps_per_epoch (the authors' 10·10^epoch for 5-epoch runs; table 4's per-task
    schedules are growth^epoch with base 1)."""
    epoch = jnp.asarray(step, jnp.int32) // max(int(steps_per_epoch), 1)
    return jnp.float32(base) * jnp.power(jnp.float32(growth), epoch.astype(jnp.float32))


# ----------------------------------------------------------------------------- forward


def adapler_forward(encoder: Encoder, params: dict, batch: Batch, lam, rng=None,
                    theta_d: jnp.ndarray | None = None, beta: float = BETA,
                    pooling: str = "cls", layer_features: bool = False) -> dict:
    """The soft-removal forward (§3.3): embedding, then ONE `lax.scan` over layers carrying
    (hidden, accumulated mask M); see the module docstring for the per-layer recurrence.

    lam: λ (scalar; use EVAL_LAMBDA for a hard cut); theta_d: [L] dummy θ_d (default ones;
    pass it to differentiate w.r.t. it); rng: dropout key (None = no dropout); pooling:
    what the final head reads ("cls", or "mean": the mean of the kept tokens weighted by
    their soft keep exp(M), `soft_pool`); layer_features: also return every layer's pooled
    state (exit heads on every layer: `jaxit.methods.depth_width`).
    Returns {"scores": [L, B, T] S̃^ℓ (CP outputs), "masks": [L, B, T] M after CP ℓ (the
    additive mask layer ℓ+1 runs with), "n_kept": [L, B] soft count of the tokens layer
    ℓ+1 runs on (Σ exp(M), [CLS] incl.), "deltas": [L, B] δ^ℓ, "logits": [B, C],
    ["features": [L, B, D] the pooled output of layer ℓ+1]}.
    """
    cfg = encoder.config
    enc, heads = params["encoder"], params["heads"]
    L = cfg.num_layers
    eta = jnp.asarray(heads["eta"], jnp.float32)
    chex.assert_shape(eta, (L,))
    theta_d = jnp.ones((L,), jnp.float32) if theta_d is None else theta_d
    chex.assert_shape(theta_d, (L,))
    r_embed, r_layers, r_head = (None,) * 3 if rng is None else tuple(jax.random.split(rng, 3))
    hidden = encoder.embed(enc, batch, r_embed)
    attn = jnp.asarray(batch.attention_mask)
    mask0 = mask_bias_from(attn, jnp.float32)
    removable = (attn > 0).at[:, 0].set(False)
    keys = None if rng is None else jax.random.split(r_layers, L)
    layers = None if cfg.shared_layers else enc["layers"]

    def step(carry, xs):
        h, m_acc = carry
        lp, cp_l, eta_l, td_l, key = xs
        lp = enc["layers"] if lp is None else lp
        scores = scores_from_log_keep(cp_l, h, m_acc)
        n = jnp.exp(m_acc).at[:, 0].set(1.0).sum(-1, keepdims=True)
        delta = keep_threshold(eta_l, n)
        m = soft_removal(amplify_cls(scores, td_l), delta, lam, beta)
        m_acc = jnp.maximum(m_acc + jnp.where(removable, m, 0.0), MASK_MIN)
        h = encoder.block(lp, h, m_acc, key)
        n_after = jnp.exp(m_acc).at[:, 0].set(1.0).sum(-1)
        feats = soft_pool(h, m_acc, pooling) if layer_features else None
        return (h, m_acc), (scores, m_acc, n_after, delta[:, 0], feats)

    xs = (layers, heads["cp"], eta, theta_d, keys)
    (h, m_last), (scores, masks, n_kept, deltas, feats) = jax.lax.scan(
        step, (hidden, mask0), xs, length=L)
    logits, _ = exit_head(heads["final"], soft_pool(h, m_last, pooling), r_head,
                          cfg.hidden_dropout)
    out = {"scores": scores, "masks": masks, "n_kept": n_kept, "deltas": deltas,
           "logits": logits}
    if layer_features:
        out["features"] = feats
    return out


def soft_pool(hidden: jnp.ndarray, mask: jnp.ndarray, pooling: str) -> jnp.ndarray:
    """The heads' input under an accumulated additive mask M [B, T]: [CLS]'s state, or the
    mean of the tokens weighted by their soft keep exp(M) (padding and removed tokens 0; at
    λ = EVAL_LAMBDA the plain mean of the kept tokens, what the engine pools). [B, D]."""
    return pool_features(hidden, jnp.exp(mask), pooling)


def tokens_per_layer(out: dict, attention_mask) -> np.ndarray:
    """[B, L] int: the tokens each layer ran on in a hard-cut forward (λ = EVAL_LAMBDA):
    [CLS] + real tokens whose mask stayed above MASK_MIN / 2."""
    masks = np.asarray(out["masks"])  # [L, B, T]
    kept = (masks > MASK_MIN / 2) & (np.asarray(attention_mask)[None] > 0)
    kept[:, :, 0] = True
    return kept.sum(-1).T.astype(np.int64)



# ----------------------------------------------------------------------------- losses


def cp_loss_per_layer(scores: jnp.ndarray, saliency: jnp.ndarray, attention_mask,
                      theta: jnp.ndarray) -> jnp.ndarray:
    """KL(Ŝ^ℓ || S̃^ℓ) averaged over the batch, per layer: scores [L, B, T] (CP outputs),
    saliency [B, T] raw, theta [L] -> [L]. Ŝ^ℓ normalises the saliency over the real tokens
    and amplifies [CLS] by θ^ℓ (eq. 7)."""
    mask = jnp.asarray(attention_mask, jnp.float32)
    targets = jax.vmap(lambda t: saliency_targets(saliency, mask, t))(theta)
    return jax.vmap(lambda p, q: kl_divergence(p, q, mask).mean())(targets, scores)


def layer_weights(num_layers: int) -> jnp.ndarray:
    """(L - ℓ) for ℓ = 0..L-1 (eq. 6): early CPs weigh more."""
    return jnp.arange(num_layers, 0, -1).astype(jnp.float32)


def adapler_objectives(encoder: Encoder, params: dict, theta_d: jnp.ndarray, batch: Batch,
                       lam, rng=None, beta: float = BETA, pooling: str = "cls"):
    """One soft-removal forward -> ((L_CE, L_CP, L_LENGTH), metrics).

    L_CE: mean cross-entropy; L_CP = Σ_ℓ (L-ℓ) KL(Ŝ^ℓ||S̃^ℓ) (eq. 6, batch mean; θ enters
    the targets under stop_gradient: its gradient comes from θ_d); L_LENGTH = Σ_ℓ Σ_i
    exp(M_i^ℓ) (eq. 8, batch mean). batch.token_targets must hold the raw saliencies.
    """
    if batch.token_targets is None:
        raise ValueError("AdapLeR training needs saliency targets in batch.token_targets: set "
                         "method.saliency_dir to the output of `python -m "
                         "jaxit.interpret.saliency` for this task")
    out = adapler_forward(encoder, params, batch, lam, rng, theta_d, beta, pooling)
    ce, l_cp, length, metrics = adapler_terms(out, params, batch, lam)
    return (ce, l_cp, length), metrics


def adapler_terms(out: dict, params: dict, batch: Batch, lam):
    """(L_CE of out["logits"], L_CP, L_LENGTH, metrics) from a soft-removal forward's output
    (`adapler_forward`); see `adapler_objectives`."""
    L = out["scores"].shape[0]
    ce = task_loss(out["logits"], jnp.asarray(batch.labels), False).mean()
    theta = jax.lax.stop_gradient(jnp.asarray(params["heads"]["theta"], jnp.float32))
    kl = cp_loss_per_layer(out["scores"], jnp.asarray(batch.token_targets, jnp.float32),
                           batch.attention_mask, theta)
    l_cp = jnp.sum(layer_weights(L) * kl)
    length = out["n_kept"].sum(0).mean()
    real = jnp.asarray(batch.attention_mask, jnp.float32).sum(-1)
    metrics = {"loss_ce": ce, "loss_cp": l_cp, "loss_length": length,
               "kept_fraction": (out["n_kept"] / real[None]).mean(),
               "kept_fraction_last": (out["n_kept"][-1] / real).mean(),
               "lambda": jnp.asarray(lam, jnp.float32),
               "eta_mean": params["heads"]["eta"].mean(), "theta_mean": theta.mean()}
    return ce, l_cp, length, metrics


def adapler_grads(objectives: Callable, params: dict, num_layers: int, gamma: float,
                  phi: float):
    """Both objectives' gradients from one forward (`jax.vjp`, two cotangents).

    objectives(params, theta_d) -> ((ce, cp, length), metrics). Main params get
    ∂(ce + γ cp); η gets ∂(ce + φ length); θ gets ∂(ce + φ length)/∂θ_d / max(θ, 1e-3)
    (appendix B, eq. 14). Returns (main loss, metrics, grads shaped like params).
    """
    return split_objective_grads(objectives, params, num_layers, (1.0, gamma, 0.0),
                                 (1.0, 0.0, phi))


def split_objective_grads(objectives: Callable, params: dict, num_layers: int,
                          main_weights: tuple, speed_weights: tuple):
    """Two weighted sums of the same losses, differentiated from one forward: every param
    but η and θ gets ∂(Σ main_weights · losses); η gets ∂(Σ speed_weights · losses) and θ
    that objective's ∂/∂θ_d / max(θ, 1e-3) (eq. 14). objectives(params, theta_d) ->
    (tuple of scalar losses, metrics). Returns (main loss, metrics + "loss_speed", grads)."""
    theta_d = jnp.ones((num_layers,), jnp.float32)
    losses, vjp, metrics = jax.vjp(objectives, params, theta_d, has_aux=True)
    cot = lambda ws: tuple(jnp.full_like(x, w) for x, w in zip(losses, ws))
    g_main, _ = vjp(cot(main_weights))
    g_speed, g_theta_d = vjp(cot(speed_weights))
    theta = jnp.asarray(params["heads"]["theta"], jnp.float32)
    heads = {**g_main["heads"], "eta": g_speed["heads"]["eta"],
             "theta": (g_theta_d / jnp.maximum(theta, THETA_FLOOR)).astype(theta.dtype)}
    grads = {**g_main, "heads": heads}
    total = lambda ws: sum(w * x for x, w in zip(losses, ws) if w)
    return total(main_weights), {**metrics, "loss_speed": total(speed_weights)}, grads


def speed_optimizer(num_steps: int, lr: float = 5e-4, warmup_fraction: float = 0.06,
                    clip_norm: float = 1.0, eta_range=(ETA_MIN, ETA_MAX)):
    """The η/θ optimizer (authors' code): clip-norm → Adam (AdamW without weight decay) →
    lr with linear warm-up and decay → η projected to [0.01, 1] after the step."""
    from jaxit.methods.schedules import lr_schedule, project_to_box

    def is_eta(path) -> bool:
        return any(getattr(k, "key", None) == "eta" for k in path)

    parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
    parts += [optax.scale_by_adam(), optax.scale_by_learning_rate(
        lr_schedule(lr, num_steps, warmup_fraction)), project_to_box(*eta_range, select=is_eta)]
    return optax.chain(*parts)


GROUPS = {"heads/eta": "speed", "heads/theta": "speed", "heads/cp": "cp"}


def make_adapler(encoder: Encoder, num_outputs: int, is_regression: bool, num_steps: int,
                 steps_per_epoch: int, *, gamma: float = 5e-3, phi: float = 5e-4,
                 lambda_base: float = 10.0, lambda_growth: float = 10.0, beta: float = BETA,
                 eta_init: float = ETA_INIT, theta_init: float = THETA_INIT,
                 speed_lr: float = 5e-4, speed_warmup_fraction: float = 0.06,
                 speed_clip_norm: float = 1.0, cp_lr_scale: float = 1.0,
                 saliency_dir: str = "", pooling: str = "cls", name: str = "adapler") -> Method:
    """An AdapLeR length-reduction `Method` (phase 3; see the module docstring).

    Start it from a fine-tuned run (`init_from`): the encoder and the "final" head are
    copied, CPs start random, η = eta_init, θ = theta_init. λ = lambda_base ·
    lambda_growth^epoch with `steps_per_epoch` steps per epoch. `saliency_dir` holds the
    phase-2 saliencies (`jaxit.interpret.saliency`), attached to the training split by guid.
    Groups: "main" (encoder, final head), "cp" (the CPs; main objective, lr x cp_lr_scale:
    1 = the paper, which trains them ~10k steps; short CPU schedules need more) and "speed"
    (η, θ: their own optimizer).
    """
    if is_regression:
        raise ValueError("adapler: saliency targets need a gold class; regression tasks are "
                         "not supported")
    if not 0.0 < beta < 1.0:
        raise ValueError(f"adapler: beta must be in (0, 1) (the paper: 0 < beta < 0.1), got {beta}")
    if gamma < 0 or phi < 0:
        raise ValueError(f"adapler: gamma and phi must be >= 0, got {gamma}, {phi}")
    if cp_lr_scale <= 0:
        raise ValueError(f"adapler: cp_lr_scale must be > 0, got {cp_lr_scale}")
    if lambda_base <= 0 or lambda_growth < 1:
        raise ValueError(f"adapler: need lambda_base > 0 and lambda_growth >= 1, got "
                         f"{lambda_base}, {lambda_growth}")
    cfg = encoder.config
    L = cfg.num_layers

    def init(rng, encoder_params):
        heads = init_adapler_heads(rng, L, cfg.hidden_size, num_outputs,
                                   encoder_params.get("pooler"), eta_init, theta_init)
        return {"encoder": encoder_params, "heads": heads}

    def lam(step):
        return lambda_at(step, steps_per_epoch, lambda_base, lambda_growth)

    def objectives(params, theta_d, batch, rng, step):
        return adapler_objectives(encoder, params, theta_d, batch, lam(step), rng, beta,
                                  pooling)

    def loss(params, batch, rng, step):
        (ce, l_cp, _), metrics = objectives(params, jnp.ones((L,), jnp.float32), batch, rng,
                                             step)
        return ce + gamma * l_cp, metrics

    def grads(params, batch, rng, step):
        return adapler_grads(lambda p, t: objectives(p, t, batch, rng, step), params, L,
                             gamma, phi)

    def predict(params, batch):
        return adapler_forward(encoder, params, batch, EVAL_LAMBDA, pooling=pooling)["logits"]

    def prepare_data(dataset, split):
        if not saliency_dir:
            raise ValueError("adapler: method.saliency_dir is not set (phase 2 writes it: "
                             "python -m jaxit.interpret.saliency --run=<fine-tuned run> "
                             "--out=<dir>)")
        from jaxit.data.saliency_files import attach_saliency

        return attach_saliency(dataset, saliency_dir, split)

    return Method(
        name=name, encoder=encoder, is_regression=False, num_outputs=num_outputs,
        init=init, loss=loss, predict=predict,
        param_labels=lambda params: label_by_top_key(params, GROUPS, "main"),
        gates={"main": "train", "cp": "train", "speed": "train"}, grads=grads,
        lr_scale={} if cp_lr_scale == 1.0 else {"cp": float(cp_lr_scale)},
        group_optimizers={"speed": speed_optimizer(num_steps, speed_lr, speed_warmup_fraction,
                                                   speed_clip_norm)},
        prepare_data=prepare_data)


def build_adapler(mcfg, encoder: Encoder, num_outputs: int, is_regression: bool,
                  num_steps: int, steps_per_epoch: int | None = None) -> Method:
    """Registry builder. Options of `mcfg` (defaults = the authors' SST-2 setting): gamma
    (5e-3), phi (5e-4), lambda_base (10), lambda_growth (10), beta (0.1), eta_init (0.25),
    theta_init (1), speed_lr (5e-4), speed_warmup_fraction (0.06), speed_clip_norm (1),
    cp_lr_scale (1), saliency_dir (required for training), pooling (cls)."""
    from jaxit.methods.early_exit import _opt

    spe = steps_per_epoch or num_steps
    return make_adapler(
        encoder, num_outputs, is_regression, num_steps, spe,
        gamma=float(_opt(mcfg, "gamma", 5e-3)), phi=float(_opt(mcfg, "phi", 5e-4)),
        lambda_base=float(_opt(mcfg, "lambda_base", 10.0)),
        lambda_growth=float(_opt(mcfg, "lambda_growth", 10.0)),
        beta=float(_opt(mcfg, "beta", BETA)), eta_init=float(_opt(mcfg, "eta_init", ETA_INIT)),
        theta_init=float(_opt(mcfg, "theta_init", THETA_INIT)),
        speed_lr=float(_opt(mcfg, "speed_lr", 5e-4)),
        speed_warmup_fraction=float(_opt(mcfg, "speed_warmup_fraction", 0.06)),
        speed_clip_norm=float(_opt(mcfg, "speed_clip_norm", 1.0)),
        cp_lr_scale=float(_opt(mcfg, "cp_lr_scale", 1.0)),
        saliency_dir=str(_opt(mcfg, "saliency_dir", "")),
        pooling=str(_opt(mcfg, "pooling", "cls")))


# ----------------------------------------------------------------------------- evaluation


def evaluate_soft_mask(encoder: Encoder, params: dict, batches, eta=None,
                       pooling: str = "cls") -> dict:
    """Soft-mask evaluation at λ = EVAL_LAMBDA (what hard dropping computes) over
    (batch, valid) pairs (`jaxit.data.eval_batches`). `eta` ([L] or scalar) overrides η (0 =
    no reduction). Returns {"predictions" [N], "labels" [N], "tokens_per_layer" [N, L],
    "num_tokens" [N], "accuracy", "flops_speedup" (encoder FLOPs of the full model / of the
    kept tokens, `flops.encoder_flops`, summed over examples), "flops_speedup_with_cps"
    (also counting the CPs and the head: `flops.token_drop_flops` vs `full_model_flops`),
    "kept_fraction" [L]}."""
    from jaxit import flops as F

    cfg = encoder.config
    if eta is not None:
        eta = jnp.broadcast_to(jnp.asarray(eta, jnp.float32), (cfg.num_layers,))
        params = {**params, "heads": {**params["heads"], "eta": eta}}
    fwd = jax.jit(lambda p, b: adapler_forward(encoder, p, b, EVAL_LAMBDA, pooling=pooling))
    preds, labels, tpl, ntok = [], [], [], []
    for batch, valid in batches:
        out = jax.device_get(fwd(params, batch._replace(labels=None, token_targets=None)))
        keep = np.asarray(valid, bool)
        preds.append(np.asarray(out["logits"]).argmax(-1)[keep])
        labels.append(np.asarray(batch.labels)[keep])
        tpl.append(tokens_per_layer(out, batch.attention_mask)[keep])
        ntok.append(np.asarray(batch.attention_mask).sum(-1)[keep])
    preds, labels = np.concatenate(preds), np.concatenate(labels)
    tpl, ntok = np.concatenate(tpl), np.concatenate(ntok)
    c = int(params["heads"]["final"]["out"]["bias"].shape[-1])
    full = [F.encoder_flops(cfg, [int(n)] * cfg.num_layers) for n in ntok]
    kept = [F.encoder_flops(cfg, [int(k) for k in row]) for row in tpl]
    full_h = [F.full_model_flops(cfg, int(n), c) for n in ntok]
    kept_h = [F.token_drop_flops(cfg, int(n), [int(k) for k in row], c)
              for n, row in zip(ntok, tpl)]
    return {"predictions": preds, "labels": labels, "tokens_per_layer": tpl, "num_tokens": ntok,
            "accuracy": float((preds == labels).mean()),
            "flops_speedup": F.speedup(full, kept),
            "flops_speedup_with_cps": F.speedup(full_h, kept_h),
            "kept_fraction": tpl.sum(0) / max(int(ntok.sum()), 1)}
