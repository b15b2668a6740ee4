"""AdapLeR inference with real token dropping at batch 1 (seed 002 §3.2; DESIGN §4, §5).

A contribution predictor (CP) sits in front of every layer: CP 0 scores the embedding
output, CP l (0-based) the output of layer l. After CP l, [CLS] and the tokens with
S̃_i >= δ^l = η^l / n (n = tokens still kept, [CLS] included) are kept, and layer l + 1 runs
on the kept tokens only: their hidden states are gathered (CLS first, original order) into
the smallest length bucket that holds them. The last layer is followed by the exit head on
[CLS] and no CP.

Two ways to run an example, same kept sets and outputs (tested), each function compiled
once per length bucket and never again (see `trace_counts`):

- fused (the default): ONE jitted call per example, `fused_step(embed_params, layers, cps,
  etas, head, inputs [3, 1, T0])` -> (outputs [1, C], kept counts [L]). Layers are unrolled;
  after each CP the survivors are compacted (a cumsum scatter, CLS first, original order)
  and `lax.switch` runs the branch of the smallest bucket that holds them: gather into
  [1, b, D], the layer at size b, the next CP (or the head). No host round trip per layer,
  which matters on a busy host, where every device->host sync waits for a time slice.
- host loop (`fused=False`; always with `return_scores`, which also returns S̃ and the kept
  masks per layer for rationale evaluation and heatmaps), per-layer jitted steps:

    first_step(embed_params, cp_0, eta_0, inputs [3, 1, T])         -> (buf, packed [2, T])
    layer_step(layer_params, cp_l, eta_l, buf [1, Tmax, D], idx [1, T]) -> (buf, packed [2, T])
    last_step(layer_params, head, buf [1, Tmax, D], idx [1, T])      -> outputs [1, C]

  `buf` is a fixed-size [1, Tmax, D] buffer (Tmax = the largest bucket) holding the last
  layer's output in rows [0, T); `idx` [1, T] int32 lists the rows that the next layer runs
  on (-1 = padding). Gathering from a fixed-size buffer keeps the compiled shapes to one
  per bucket (a gather from the previous bucket's array would need one per pair of
  buckets). `packed` holds the CP scores S̃ (row 0) and the device's keep decision (row 1,
  1.0 = keep); one small device->host transfer per layer brings both to the host, which
  builds the next `idx` with numpy.

The static full model `full_step(embed_params, layers, head, ids, tt, mask)` is one call.
The CP math and the keep decision are `jaxit.methods.adapler`'s (`contribution_scores`:
Dense(32) -> GELU -> Dense(1) -> softmax over the kept tokens; `hard_keep`: [CLS] and
S̃ >= η/n), always on the device, so the host never re-derives a threshold in other
arithmetic. θ does not enter inference (θ_d ≡ 1).

FLOPs count real tokens only (`jaxit.flops.token_drop_flops`: layers on the kept counts,
the CPs, the head); speed-up = Σ FLOPs(full model) / Σ FLOPs(AdapLeR), the full model having
no CPs. Wall time is measured per example from host token ids to the prediction on host.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxit import flops as flops_lib
from jaxit.batch import Batch
from jaxit.encoders.transformer import Encoder, mask_bias_from
from jaxit.heads import has_exit_heads, head_cost, head_outputs, lte_certainty, stacked_heads
from jaxit.inference.adapler_runs import load_adapler_run  # noqa: F401  (re-exported)
from jaxit.inference.buckets import (
    DEFAULT_BUCKETS,
    bucket_for,
    examples_from_batch,
    pad_to_bucket,
)
from jaxit.inference.engine_results import TokenAccount, example_flops
from jaxit.inference.policies import layer_output
from jaxit.methods.adapler import contribution_scores, cp_layer, hard_keep

# ----------------------------------------------------------------------------- results


@dataclasses.dataclass
class TokenDropResult:
    """One example.

    outputs:          [C] logits (or [1] value) of the last layer's head.
    tokens_per_layer: [L] int, the tokens layer l + 1 ran on (after CP l's drop).
    flops:            real-token FLOPs (`flops.token_drop_flops`; the static model's for
                      `run_static_one`).
    seconds:          wall time, host ids -> prediction on host.
    num_tokens:       n, the input's real tokens.
    scores:           [L, n] float32 S̃ of CP l per input token (NaN once dropped), or None.
    kept:             [L, n] bool, token ran through layer l + 1, or None.
    """

    outputs: np.ndarray
    tokens_per_layer: np.ndarray
    flops: int
    seconds: float
    num_tokens: int
    scores: np.ndarray | None = None
    kept: np.ndarray | None = None
    exit_layer: int = 0  # the layer whose head answered (1-based); L without a policy

    @property
    def prediction(self):
        return float(self.outputs[0]) if self.outputs.shape[0] == 1 else int(np.argmax(self.outputs))


@dataclasses.dataclass
class TokenDropResults(TokenAccount):
    outputs: np.ndarray  # [N, C]
    tokens_per_layer: np.ndarray  # [N, L]
    flops: np.ndarray  # [N] int64
    full_flops: np.ndarray  # [N] int64, the static full model on the same inputs
    seconds: np.ndarray  # [N]
    num_tokens: np.ndarray  # [N]
    is_regression: bool
    examples: list[TokenDropResult]
    exit_layers: np.ndarray | None = None  # [N] int


# ----------------------------------------------------------------------------- runner


def _find(params: dict, name: str):
    heads = params.get("heads", {})
    if name in heads:
        return heads[name]
    if name in params:
        return params[name]
    raise KeyError(f"AdapLeR params have no {name!r} (looked in params['heads'] and params)")


class TokenDropRunner:
    """Batch-1 AdapLeR inference with real token dropping.

    runner = TokenDropRunner(encoder, params, num_outputs=2)   # AdapLeR params
    runner.warmup()                                          # compiles every bucket
    res = runner.run(examples)                               # TokenDropResults
    static = runner.run_static(examples)                     # the full model (no CPs)

    `params`: {"encoder", "heads": {"final": exit head, "cp": stacked CPs [L, ...],
    "eta": [L]}} (`jaxit.methods.adapler`). `eta` overrides the trained η (a scalar or [L]):
    η -> 0 keeps every token, larger η drops more. `buckets`: padded lengths; the runner
    compiles each function once per bucket and never again (`trace_counts`). `pooling`:
    what the heads read ("cls" or "mean" of the kept tokens).

    Depth and width (`jaxit.methods.depth_width`: params that also hold "exits" and
    optionally "lte"): `run(examples, policy=...)` runs the host loop with an exit head after
    every layer on its kept tokens; the policy decides on the host whether to stop there.
    """

    def __init__(self, encoder: Encoder, params: dict, num_outputs: int,
                 is_regression: bool = False, buckets: Sequence[int] = DEFAULT_BUCKETS,
                 eta=None, fused: bool = True, pooling: str = "cls"):
        cfg = encoder.config
        self.fused = bool(fused)
        self.encoder, self.config = encoder, cfg
        self.num_outputs, self.is_regression = int(num_outputs), bool(is_regression)
        self.num_layers = L = cfg.num_layers
        self.buckets = tuple(sorted(int(b) for b in buckets if b <= cfg.max_position_embeddings))
        if not self.buckets:
            raise ValueError(f"no bucket fits max_position_embeddings {cfg.max_position_embeddings}")
        self.max_len = self.buckets[-1]
        cp = _find(params, "cp")
        chex.assert_shape(cp["hidden"]["kernel"], (L, cfg.hidden_size, None))
        chex.assert_shape(cp["out"]["kernel"], (L, None, 1))
        self.cp_hidden = int(cp["hidden"]["kernel"].shape[-1])
        self.set_eta(_find(params, "eta") if eta is None else eta)
        enc = jax.device_put(params["encoder"])
        self._embed_params = {k: v for k, v in enc.items() if k not in ("layers", "pooler")}
        self._layers = [encoder.layer_params(enc, i) for i in range(L)]
        self._cps = [jax.device_put(cp_layer(cp, i)) for i in range(L)]
        self._head = jax.device_put(_find(params, "final"))
        heads = params.get("heads", {})
        self.has_exits = has_exit_heads(heads)
        self._exit_heads = ([jax.device_put(jax.tree.map(lambda x, i=i: x[i],
                                                         stacked_heads(heads)))
                             for i in range(L)] if self.has_exits else None)
        self._lte = jax.device_put(heads["lte"]) if "lte" in heads else None
        self.pooling = pooling
        self.head_cost = head_cost(_find(params, "final"), pooling)  # FLOPs of one exit head
        self._pad_id = cfg.pad_token_id
        self.trace_counts: dict = {}
        counts, tmax = self.trace_counts, self.max_len

        def to_buffer(h):
            return jnp.pad(h, ((0, 0), (0, tmax - h.shape[1]), (0, 0)))

        def decide(cp_l, eta_l, h, valid):
            valid = valid.astype(jnp.float32)
            s = contribution_scores(cp_l, h, valid)
            keep = hard_keep(s, valid, eta_l)
            return jnp.concatenate([s, keep], axis=0)  # [2, T] (B = 1)

        def gather(buf, idx):
            valid = idx >= 0
            x = jnp.take(buf, jnp.maximum(idx[0], 0), axis=1)
            return x, valid

        def first_step(embed_params, cp0, eta0, inputs):
            counts["first"] = counts.get("first", 0) + 1
            ids, tt, mask = inputs[0], inputs[1], inputs[2]
            h = encoder.embed(embed_params, Batch(ids, tt, mask))
            return to_buffer(h), decide(cp0, eta0, h, mask > 0)

        def layer_step(lp, cp_l, eta_l, buf, idx):
            counts["layer"] = counts.get("layer", 0) + 1
            x, valid = gather(buf, idx)
            h = encoder.block(lp, x, mask_bias_from(valid, x.dtype))
            return to_buffer(h), decide(cp_l, eta_l, h, valid)

        def last_step(lp, head, buf, idx):
            counts["last"] = counts.get("last", 0) + 1
            x, valid = gather(buf, idx)
            h = encoder.block(lp, x, mask_bias_from(valid, x.dtype))
            out, _ = head_outputs(head, h, valid, pooling)
            return out.astype(jnp.float32)

        def layer_exit_step(lp, cp_l, eta_l, head, lte, buf, idx):
            """`layer_step` plus the layer's exit head (and LTE) on the tokens it ran on, in
            the same dispatch: (buf, packed [2, T], row [1, C + 1]: outputs, then u or 0)."""
            counts["layer_exit"] = counts.get("layer_exit", 0) + 1
            x, valid = gather(buf, idx)
            h = encoder.block(lp, x, mask_bias_from(valid, x.dtype))
            out, pooled = head_outputs(head, h, valid, pooling)
            u = lte_certainty(lte, pooled) if lte is not None else jnp.zeros((1,))
            row = jnp.concatenate([out, u[:, None]], axis=-1).astype(jnp.float32)
            return to_buffer(h), decide(cp_l, eta_l, h, valid), row

        def full_step(embed_params, layers, head, ids, tt, mask):
            counts["full"] = counts.get("full", 0) + 1
            h = encoder.embed(embed_params, Batch(ids, tt, mask))
            bias = mask_bias_from(mask, h.dtype)
            for lp in layers:
                h = encoder.block(lp, h, bias)
            out, _ = head_outputs(head, h, mask, pooling)
            return out.astype(jnp.float32)

        buckets_ = self.buckets

        def compact(keep):
            """keep [1, T] -> (order [T]: kept rows first, in order; k = their count)."""
            keep = keep[0] > 0
            t = keep.shape[0]
            target = jnp.where(keep, jnp.cumsum(keep) - 1, t)
            order = jnp.zeros((t,), jnp.int32).at[target].set(jnp.arange(t, dtype=jnp.int32),
                                                              mode="drop")
            return order, keep.sum().astype(jnp.int32)

        def fused_step(embed_params, layers, cps, etas, head, inputs, force):
            """The whole example in one call: after each CP, `lax.switch` picks the branch of
            the smallest bucket holding the kept count, which gathers the survivors, runs the
            layer at that size and scores them with the next CP (or the head). `force` >= 0
            takes branch `force` at every layer instead (warm-up only: XLA:CPU pays a large
            one-time cost the first time each branch runs)."""
            counts["fused"] = counts.get("fused", 0) + 1
            ids, tt, mask = inputs[0], inputs[1], inputs[2]
            t0 = ids.shape[1]
            sizes = [b for b in buckets_ if b < t0] + [t0]
            h = encoder.embed(embed_params, Batch(ids, tt, mask))
            valid = (mask > 0).astype(jnp.float32)
            keep = hard_keep(contribution_scores(cps[0], h, valid), valid, etas[0])
            buf, kept_counts, out = h, [], None
            for l in range(L):
                order, k = compact(keep)
                kept_counts.append(k)
                bi = jnp.searchsorted(jnp.asarray(sizes, jnp.int32), k, side="left")
                bi = jnp.where(force >= 0, jnp.minimum(force, len(sizes) - 1), bi)

                def branch(b, l=l):
                    def run(operands):
                        buf, order, k = operands
                        v = (jnp.arange(b) < k)[None]
                        x = jnp.take(buf, order[:b], axis=1)
                        hb = encoder.block(layers[l], x, mask_bias_from(v, x.dtype))
                        if l == L - 1:
                            return head_outputs(head, hb, v, pooling)[0].astype(jnp.float32)
                        vf = v.astype(jnp.float32)
                        kb = hard_keep(contribution_scores(cps[l + 1], hb, vf), vf, etas[l + 1])
                        buf = jax.lax.dynamic_update_slice(buf, hb, (0, 0, 0))
                        return buf, jnp.pad(kb, ((0, 0), (0, t0 - b)))
                    return run

                res = jax.lax.switch(bi, [branch(b) for b in sizes], (buf, order, k))
                if l == L - 1:
                    out = res
                else:
                    buf, keep = res
            return out, jnp.stack(kept_counts)

        self.first_step = jax.jit(first_step)
        self.layer_step = jax.jit(layer_step)
        self.last_step = jax.jit(last_step)
        self.layer_exit_step = jax.jit(layer_exit_step)
        self.full_step = jax.jit(full_step)
        self.fused_step = jax.jit(fused_step)
        self._no_force = jax.device_put(np.int32(-1))

    def set_eta(self, eta) -> None:
        """Sets η (a scalar or [L], >= 0) without recompiling: η is an argument of the
        compiled steps. η = 0 keeps every token."""
        eta = np.broadcast_to(np.asarray(eta, np.float32), (self.num_layers,)).copy()
        if not np.all(np.isfinite(eta)) or np.any(eta < 0):
            raise ValueError(f"eta must be finite and >= 0, got {eta}")
        self.eta = eta
        self._etas = [jax.device_put(np.float32(e)) for e in eta]
        self._eta_array = jax.device_put(eta)

    # ------------------------------------------------------------------ inputs

    def bucket(self, n: int) -> int:
        return bucket_for(n, self.buckets)

    def pad(self, input_ids, token_type_ids=None):
        """Real tokens -> (ids, token types, mask) [1, bucket] int32 numpy arrays."""
        return pad_to_bucket(input_ids, token_type_ids, self.buckets, self._pad_id)

    def warmup(self, static: bool = True, fused: bool = True, host: bool = True) -> None:
        """Compiles every function for every bucket (the static model, the fused step, the
        host-loop steps: each as asked); nothing compiles afterwards."""
        for b in self.buckets:
            inputs = np.stack(self.pad(np.full((b,), 101, np.int32)))
            if host:
                buf, _ = self.first_step(self._embed_params, self._cps[0], self._etas[0], inputs)
                idx = np.arange(b, dtype=np.int32)[None]
                buf2, _ = self.layer_step(self._layers[0], self._cps[0], self._etas[0], buf, idx)
                np.asarray(self.last_step(self._layers[0], self._head, buf2, idx))
                if self.has_exits:
                    np.asarray(self.layer_exit_step(self._layers[0], self._cps[0],
                                                    self._etas[0], self._exit_heads[0],
                                                    self._lte, buf, idx)[2])
            if fused:  # every branch of every layer runs once (see fused_step)
                for j in range(sum(1 for c in self.buckets if c <= b)):
                    np.asarray(self.fused_step(self._embed_params, self._layers, self._cps,
                                               self._eta_array, self._head, inputs,
                                               np.int32(j))[1])
            if static:
                np.asarray(self.full_step(self._embed_params, self._layers, self._head,
                                          *self.pad(np.full((b,), 101, np.int32))))

    # ------------------------------------------------------------------ running

    def run_one(self, input_ids, token_type_ids=None, return_scores: bool = False,
                fused: bool | None = None, policy=None) -> TokenDropResult:
        """One example through the layers, dropping tokens after every CP.

        fused (default: the runner's setting): one device call for the whole example
        (`fused_step`); otherwise, and always with `return_scores` or a `policy`, the host
        loop over the per-layer steps (one small transfer per layer). Same kept sets and
        outputs. `policy` (an `ExitPolicy`; params with exit heads): after each layer its
        exit head answers on the kept tokens and the policy may stop the example there."""
        if policy is not None and not self.has_exits:
            raise ValueError("an exit policy needs params with exit heads on every layer "
                             "(heads['exits'], e.g. a depth_width run)")
        if policy is None and (self.fused if fused is None else fused) and not return_scores:
            return self._run_fused(input_ids, token_type_ids)
        start = time.perf_counter()
        n = int(np.asarray(input_ids).size)
        inputs = np.stack(self.pad(input_ids, token_type_ids))  # [3, 1, T]: one transfer
        L = self.num_layers
        buf, packed = self.first_step(self._embed_params, self._cps[0], self._etas[0], inputs)
        pos = np.arange(n)  # input positions of the rows [0, cur) of the buffer
        cur = n
        counts = np.zeros(L, np.int64)
        scores = np.full((L, n), np.nan, np.float32) if return_scores else None
        kept = np.zeros((L, n), bool) if return_scores else None
        out, exit_layer = None, L
        if policy is not None:
            policy.reset()
        for l in range(L):  # CP l's decision, then layer l + 1
            p = np.asarray(packed)
            rows = np.flatnonzero(p[1, :cur] > 0.5)
            if return_scores:
                scores[l, pos] = p[0, :cur]
                kept[l, pos[rows]] = True
            k = rows.shape[0]
            counts[l] = k
            pos, cur = pos[rows], k
            idx = np.full((1, self.bucket(k)), -1, np.int32)
            idx[0, :k] = rows
            if l < L - 1 and policy is not None:  # one dispatch, one transfer per layer
                buf, packed, row = self.layer_exit_step(
                    self._layers[l], self._cps[l + 1], self._etas[l + 1], self._exit_heads[l],
                    self._lte, buf, idx)
                packed, row = jax.device_get((packed, row))
                c = self.num_outputs
                lte = row[0, c] if self._lte is not None else None
                if policy.update(l + 1, layer_output(row[0, :c], lte, self.is_regression)):
                    out, exit_layer = row[:, :c], l + 1
                    break
            elif l < L - 1:
                buf, packed = self.layer_step(self._layers[l], self._cps[l + 1],
                                              self._etas[l + 1], buf, idx)
            else:
                out = self.last_step(self._layers[l], self._head, buf, idx)
        outputs = np.asarray(out)[0]
        seconds = time.perf_counter() - start
        if policy is None:
            fl = flops_lib.token_drop_flops(self.config, n, counts.tolist(), self.num_outputs,
                                            self.cp_hidden, self.head_cost)
        else:
            fl = example_flops(self.config, n, counts[:exit_layer], self.num_outputs,
                               exit_layer, self._lte is not None, self.cp_hidden,
                               self.head_cost)
            counts[exit_layer:] = 0
        return TokenDropResult(outputs, counts, fl, seconds, n, scores, kept, exit_layer)

    def _run_fused(self, input_ids, token_type_ids) -> TokenDropResult:
        start = time.perf_counter()
        n = int(np.asarray(input_ids).size)
        inputs = np.stack(self.pad(input_ids, token_type_ids))
        out, counts = self.fused_step(self._embed_params, self._layers, self._cps,
                                      self._eta_array, self._head, inputs, self._no_force)
        outputs = np.asarray(out)[0]
        counts = np.asarray(counts).astype(np.int64)
        seconds = time.perf_counter() - start
        fl = flops_lib.token_drop_flops(self.config, n, counts.tolist(), self.num_outputs,
                                        self.cp_hidden, self.head_cost)
        return TokenDropResult(outputs, counts, fl, seconds, n, exit_layer=self.num_layers)

    def run_static_one(self, input_ids, token_type_ids=None) -> TokenDropResult:
        """The static full model (all layers on all tokens, no CPs) in one jitted call."""
        start = time.perf_counter()
        n = int(np.asarray(input_ids).size)
        ids, tt, mask = self.pad(input_ids, token_type_ids)
        out = np.asarray(self.full_step(self._embed_params, self._layers, self._head,
                                        ids, tt, mask))[0]
        seconds = time.perf_counter() - start
        return TokenDropResult(out, np.full(self.num_layers, n, np.int64),
                               self.full_flops(n), seconds, n, exit_layer=self.num_layers)

    def full_flops(self, n: int) -> int:
        return flops_lib.full_model_flops(self.config, int(n), self.num_outputs, self.head_cost)

    def collect(self, results: Sequence[TokenDropResult]) -> TokenDropResults:
        return TokenDropResults(
            np.stack([r.outputs for r in results]),
            np.stack([r.tokens_per_layer for r in results]),
            np.array([r.flops for r in results], np.int64),
            np.array([self.full_flops(r.num_tokens) for r in results], np.int64),
            np.array([r.seconds for r in results], np.float64),
            np.array([r.num_tokens for r in results], np.int32), self.is_regression,
            list(results), np.array([r.exit_layer for r in results], np.int32))

    def run(self, inputs, return_scores: bool = False, fused: bool | None = None,
            policy=None) -> TokenDropResults:
        """`inputs`: a `Batch` (rows one at a time, padding removed) or an iterable of
        (input_ids, token_type_ids) pairs of real tokens; `policy`: see `run_one`."""
        examples = examples_from_batch(inputs) if isinstance(inputs, Batch) else inputs
        return self.collect([self.run_one(ids, tt, return_scores, fused, policy)
                             for ids, tt in examples])

    def run_static(self, inputs) -> TokenDropResults:
        examples = examples_from_batch(inputs) if isinstance(inputs, Batch) else inputs
        return self.collect([self.run_static_one(ids, tt) for ids, tt in examples])
