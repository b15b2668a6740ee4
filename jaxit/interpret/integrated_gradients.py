"""Integrated Gradients (Sundararajan et al., 2017), generic and for DACT-BERT.

For a differentiable f, an input x and a baseline x' (default zeros), the attribution of
input coordinate i is

    IG_i = (x_i - x'_i) * integral_0^1 df/dx_i (x' + alpha (x - x')) d alpha

on the straight-line path from x' to x. Completeness: sum_i IG_i = f(x) - f(x') exactly; a
quadrature rule with m steps approximates the integral, so the gap (`IGResult.delta`) is
the quadrature error and shrinks as m grows. Rules (`rule`):

- ``"trapezoid"`` (default): m + 1 points alpha = k/m, k = 0..m, weights 1/m (1/2m at both
  ends). Exact when the gradient is linear along the path (f quadratic); error O(1/m^2).
- ``"midpoint"``: the Riemann middle sum, m points alpha = (k + 1/2)/m, weights 1/m.
  Error O(1/m^2) with half the trapezoid's constant and the opposite sign.
- ``"gauss_legendre"``: m Gauss-Legendre nodes on [0, 1]; exact for gradients that are
  polynomials of degree <= 2m - 1 along the path.

Steps: real encoders can switch sharply along the straight-line path (the MiniLM DACT model
on SST-2: a_L moving 0.09 -> 0.74 within alpha in [0.15, 0.2], slope ~90), where 50 steps
leave completeness gaps as large as the attributed change; 300 trapezoid steps brought every
gap checked below 0.2%. Check `IGResult.delta` against f(x) - f(x') (Sundararajan et al.:
within 5%) and raise `steps` when it is not small.

All path points are evaluated as one batch (`jax.vmap` of the gradient; `chunk_size` bounds
memory with `jax.lax.map(..., batch_size=chunk_size)`). Everything is traceable: jit a
wrapper that closes over f (f, steps, rule and chunk_size are static).

DACT-BERT (seed 000 §4.3, appendix A): attributions of the model's output a_L (the answer
class, or a chosen one) and of every layer's halting value h_n with respect to the input
*word* embeddings of one example ([T, E], before position/token-type embeddings and the
embedding LayerNorm, which stay fixed along the path). Per-token attribution = the sum over
the embedding dimension, so completeness carries over to tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxit.batch import Batch
from jaxit.encoders.transformer import Encoder

RULES = ("trapezoid", "midpoint", "gauss_legendre")
BASELINES = ("zeros", "pad")
DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512)


# ----------------------------------------------------------------------------- generic


def path_coefficients(steps: int, rule: str = "trapezoid") -> tuple[np.ndarray, np.ndarray]:
    """Quadrature points and weights on [0, 1]: (alphas [P], weights [P]) float64; weights
    sum to 1. P = steps + 1 for the trapezoid rule, else steps."""
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"integrated gradients needs steps >= 1, got {steps}")
    if rule == "trapezoid":
        alphas = np.arange(steps + 1, dtype=np.float64) / steps
        weights = np.full(steps + 1, 1.0 / steps)
        weights[[0, -1]] *= 0.5
    elif rule == "midpoint":
        alphas = (np.arange(steps, dtype=np.float64) + 0.5) / steps
        weights = np.full(steps, 1.0 / steps)
    elif rule == "gauss_legendre":
        nodes, w = np.polynomial.legendre.leggauss(steps)
        alphas, weights = (nodes + 1.0) / 2.0, w / 2.0
    else:
        raise ValueError(f"unknown integration rule {rule!r}; choose from {RULES}")
    return alphas, weights


def jacobian_rows(f: Callable, num_outputs: int) -> Callable:
    """x -> the Jacobian [K, *x.shape] of f: x -> [K], as one forward pass and K pullbacks.

    Same values as `jax.jacrev`, which vmaps the pullback over the K cotangents. IG then
    vmaps over path points, and that nesting (vmap over points of jacrev) gave wrong
    Jacobian rows on XLA:CPU (jax 0.10.2) for MiniLM-sized DACT models (D 384, 12 heads,
    T 32, 51 points): halting-value attributions summing to -0.035 instead of +0.0025,
    while `lax.map` over points or this loop over cotangents agreed with the directional
    derivative. The loop keeps a single level of vmap.
    """

    def rows(x):
        y, pull = jax.vjp(f, x)
        eye = jnp.eye(num_outputs, dtype=y.dtype)
        return jnp.stack([pull(eye[k])[0] for k in range(num_outputs)])

    return rows


class IGResult(NamedTuple):
    """Integrated Gradients of f at x.

    attributions:   x.shape for a scalar f; [K, *x.shape] for f with outputs [K]
    value:          f(x): [] or [K]
    baseline_value: f(baseline): [] or [K]
    """

    attributions: jnp.ndarray
    value: jnp.ndarray
    baseline_value: jnp.ndarray

    @property
    def delta(self) -> jnp.ndarray:
        """Completeness gap sum(attributions) - (f(x) - f(baseline)): [] or [K]."""
        value = jnp.asarray(self.value)
        total = jnp.reshape(self.attributions, value.shape + (-1,)).sum(-1)
        return total - (value - jnp.asarray(self.baseline_value))


def integrated_gradients(f: Callable[[jnp.ndarray], jnp.ndarray], x: jnp.ndarray,
                         baseline: jnp.ndarray | None = None, steps: int = 50,
                         rule: str = "trapezoid", chunk_size: int | None = None) -> IGResult:
    """IG of f (x -> [] or [K]) at x (any float shape) from `baseline` (zeros if None).

    Returns `IGResult`; vector-valued f gets one attribution map per output (reverse-mode
    Jacobian at every path point, `jacobian_rows`). See the module docstring for the rules.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"integrated gradients needs a float input, got {x.dtype}")
    baseline = jnp.zeros_like(x) if baseline is None else jnp.asarray(baseline, x.dtype)
    chex.assert_equal_shape([x, baseline])
    out = jax.eval_shape(f, x)
    if out.ndim > 1:
        raise ValueError(f"f must return a scalar or a vector, got shape {out.shape}")
    grad_fn = jax.grad(f) if out.ndim == 0 else jacobian_rows(f, out.shape[0])
    alphas, weights = path_coefficients(steps, rule)
    alphas, weights = jnp.asarray(alphas, x.dtype), jnp.asarray(weights, x.dtype)
    diff = x - baseline

    def along(fn, a):  # fn at the path points baseline + a (x - baseline), a [P]
        points = baseline[None] + a.reshape((-1,) + (1,) * x.ndim) * diff[None]
        if chunk_size:
            return jax.lax.map(fn, points, batch_size=int(chunk_size))
        return jax.vmap(fn)(points)

    grads = along(grad_fn, alphas)  # [P, (K,) *x.shape]
    avg = jnp.tensordot(weights.astype(grads.dtype), grads, axes=1)
    attributions = diff.astype(avg.dtype) * avg
    ends = jax.vmap(f)(jnp.stack([x, baseline]))
    return IGResult(attributions, ends[0], ends[1])


def token_attributions(attributions: jnp.ndarray) -> jnp.ndarray:
    """Per-token attribution: [..., T, E] -> [..., T], the sum over the embedding dim (keeps
    completeness)."""
    return jnp.asarray(attributions).sum(-1)


# ----------------------------------------------------------------------------- DACT


class DACTAttributions(NamedTuple):
    """IG of one example's DACT outputs w.r.t. its word embeddings (n real tokens, L layers).

    output:            [n] per-token attribution of a_L[target]
    halting:           [L, n] per-token attribution of each layer's halting value h_l
    target:            the attributed class (argmax a_L unless chosen; 0 for regression)
    output_value:      a_L[target] at the input; output_baseline: at the baseline
    halting_values:    [L] h_l at the input; halting_baseline: [L] at the baseline
    output_delta:      completeness gap of `output` (sum - (value - baseline value))
    halting_delta:     [L] completeness gaps of the halting rows
    answer:            [C] a_L at the input (probabilities, or [1] the regression value)
    """

    output: np.ndarray
    halting: np.ndarray
    target: int
    output_value: float
    output_baseline: float
    halting_values: np.ndarray
    halting_baseline: np.ndarray
    output_delta: float
    halting_delta: np.ndarray
    answer: np.ndarray


def _bucket(n: int, buckets: Sequence[int]) -> int:
    for b in sorted(buckets):
        if n <= b:
            return b
    raise ValueError(f"{n} tokens exceed the largest length bucket {max(buckets)}")


def make_dact_attributor(encoder: Encoder, is_regression: bool, steps: int = 50,
                         rule: str = "trapezoid", baseline: str = "zeros",
                         buckets: Sequence[int] = DEFAULT_BUCKETS, chunk_size: int | None = None,
                         pooling: str = "cls"):
    """A function `attribute(params, input_ids, token_type_ids=None, target=None) ->
    DACTAttributions` for one example's real tokens (no padding), compiled once per length
    bucket.

    The IG path moves the real tokens' word vectors from the baseline to the input:
    baseline "zeros" (all-zero word vectors) or "pad" (every token's vector replaced by the
    pad token's). Padding added to reach the bucket is masked out of attention and held
    at its input value, so it gets exactly zero attribution. `target` None attributes the
    answer class argmax a_L (= the DACT policy's answer wherever it stops early, by the
    halting bound); regression attributes the value a_L. `pooling`: the features the heads
    and halting units read, as the model was trained ("cls" or "mean").
    """
    from jaxit.methods.dact import dact_forward

    if baseline not in BASELINES:
        raise ValueError(f"unknown IG baseline {baseline!r}; choose from {BASELINES}")
    path_coefficients(steps, rule)  # validates steps and rule now, not at the first call
    cfg = encoder.config
    pad_id = cfg.pad_token_id

    def core(params, ids, tt, mask, target):
        table = params["encoder"]["embeddings"]["word"]
        words = jnp.take(table, ids, axis=0)  # [1, T, E]
        real = mask.astype(words.dtype)[..., None]
        base = jnp.zeros_like(words) if baseline == "zeros" else jnp.broadcast_to(
            table[pad_id], words.shape)
        base = real * base + (1.0 - real) * words  # padding: baseline = input
        batch = Batch(ids, tt, mask)

        def outputs(w):
            enc = encoder._replace(
                embed=lambda p, b, rng=None: encoder.embed(p, b, rng, word_embeddings=w))
            return dact_forward(enc, params, batch, is_regression, None, pooling)

        answer = outputs(words)["a"][-1, 0]  # [C]
        tgt = jnp.where(target < 0, jnp.argmax(answer), target).astype(jnp.int32)
        tgt = jax.lax.stop_gradient(tgt)

        def f(w):  # [L + 1]: a_L[target], then h_1..h_L
            out = outputs(w)
            return jnp.concatenate([out["a"][-1, 0, tgt][None], out["h"][:, 0]])

        res = integrated_gradients(f, words, base, steps, rule, chunk_size)
        per_token = token_attributions(res.attributions[:, 0])  # [L + 1, T]
        return {"tokens": per_token, "value": res.value, "baseline": res.baseline_value,
                "delta": res.delta, "target": tgt, "answer": answer}

    jitted = jax.jit(core)

    def attribute(params, input_ids, token_type_ids=None, target=None) -> DACTAttributions:
        if "halting" not in params.get("heads", {}):
            raise ValueError("DACT attributions need DACT params (heads['halting'] missing): "
                             "train with --config.method.name=dact")
        input_ids = np.asarray(input_ids, np.int32).reshape(-1)
        n = input_ids.shape[0]
        if n == 0:
            raise ValueError("cannot attribute an example with no tokens")
        t = _bucket(n, [b for b in buckets if b <= cfg.max_position_embeddings] or [n])
        ids = np.full((1, t), pad_id, np.int32)
        tt = np.zeros((1, t), np.int32)
        mask = np.zeros((1, t), np.int32)
        ids[0, :n], mask[0, :n] = input_ids, 1
        if token_type_ids is not None:
            tt[0, :n] = np.asarray(token_type_ids, np.int32).reshape(-1)
        num_outputs = params["heads"]["final"]["out"]["bias"].shape[-1]
        if target is not None and not (is_regression or 0 <= int(target) < num_outputs):
            raise ValueError(f"target class {target} out of range for {num_outputs} classes")
        tgt = np.int32(0 if is_regression else (-1 if target is None else int(target)))
        out = jax.device_get(jitted(params, ids, tt, mask, tgt))
        chex.assert_tree_all_finite(out)
        chex.assert_shape(out["tokens"], (cfg.num_layers + 1, t))
        tokens = np.asarray(out["tokens"])[:, :n]
        value, base, delta = (np.asarray(out[k], np.float64) for k in ("value", "baseline",
                                                                         "delta"))
        return DACTAttributions(
            output=tokens[0], halting=tokens[1:], target=int(out["target"]),
            output_value=float(value[0]), output_baseline=float(base[0]),
            halting_values=value[1:], halting_baseline=base[1:],
            output_delta=float(delta[0]), halting_delta=delta[1:],
            answer=np.asarray(out["answer"]))

    return attribute


def dact_attributions(encoder: Encoder, params: dict, input_ids, token_type_ids=None,
                      is_regression: bool = False, target: int | None = None, steps: int = 50,
                      rule: str = "trapezoid", baseline: str = "zeros",
                      pooling: str = "cls") -> DACTAttributions:
    """One-off `make_dact_attributor(...)(params, input_ids, token_type_ids, target)`; build
    the attributor once to reuse its compiled function over many examples."""
    attribute = make_dact_attributor(encoder, is_regression, steps, rule, baseline,
                                     pooling=pooling)
    return attribute(params, input_ids, token_type_ids, target)
