"""Host-side adaptive runner for multi-exit models at batch 1 (the papers' setting).

A Python loop over layers calls ONE jit-compiled per-layer function (`make_layer_step`)

    layer_step(layer_params, head_params, lte_params, hidden [B, T, D], mask_bias [B, T],
               active, layer, gate) -> (hidden [B, T, D], packed [B, K], next_active)

where `packed` holds the layer's exit outputs (logits or value, softmax probabilities, LTE u)
so that one small device->host transfer per layer brings the exit decision's inputs to the
host. The same compiled function serves every layer (layer params are arguments, sliced
once when the runner is built).

Pipelining: for policies with a device gate (threshold rules on the current layer), layer
l+1 is dispatched before the host reads layer l, and the device skips it when its copy of
the rule says stop; the host's policy still decides (see `policies.device_gate`). This hides
the per-layer host round trip (dispatch, transfer, thread wake-ups) behind the device's work,
which matters most on a busy host or a fast accelerator. Stateful rules (patience, ELBERT's
window) use one round trip per layer. Token counts are padded up to a fixed set of length
buckets, so after `warmup()` nothing is ever compiled again: at most one executable per
bucket for the embedding, the layer step and the static full model.

The policy is a separate object (`jaxit.inference.policies`): `reset()` before an example,
`update(layer, LayerOutput) -> stop?` after each layer. A batched runner or token dropping
(AdapLeR: a per-layer step that also returns token scores, and smaller buckets as tokens
leave) reuse `make_layer_step`/`unpack` and the policies unchanged.

FLOPs count real tokens only (`jaxit.flops`); wall time is measured per example from host
token ids to the prediction on the host.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxit import flops as flops_lib
from jaxit.batch import Batch
from jaxit.encoders.transformer import MASK_MIN, Encoder, mask_bias_from
from jaxit.heads import exit_head, pool_features
from jaxit.inference.policies import (
    GATE_GE,
    GATE_LAYER,
    ExitPolicy,
    FixedLayerPolicy,
    LayerOutput,
    NeverExit,
    device_gate,
)
from jaxit.methods.dact import halting_value
from jaxit.methods.early_exit import lte_certainty, stacked_heads

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512)


def _features(hidden, mask_bias, pooling: str):
    """The heads' input from hidden [B, T, D]: [CLS] or the mean of the unmasked tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    return pool_features(hidden, (mask_bias > MASK_MIN / 2).astype(hidden.dtype), pooling)


def make_layer_step(encoder: Encoder, is_regression: bool, counter: dict | None = None,
                    pooling: str = "cls"):
    """The per-layer function (pure; jit it once, it serves every layer):

        layer_step(layer_params, head_params, lte_params, hidden [B, T, D], mask_bias [B, T],
                   active [] bool, layer [] int32, gate [3] float32)
            -> (hidden [B, T, D], packed [B, K], next_active [] bool)

    When `active`, runs block + exit head (+ LTE) and packs, per example, the outputs
    [C] (logits or value), the softmax [C] (classification), u (with LTE), the halting value
    h (when the head carries a DACT "halting" unit) and a final 1.0
    ("this layer ran"); `next_active` is False when the device gate (kind, threshold,
    direction; see `policies.device_gate`) says every example stops here. When not
    `active` (a speculatively dispatched layer after a stop), returns `hidden` unchanged
    and zeros, at almost no cost. `counter["layer"]` counts traces when given.
    """

    def compute(lp, head, lte, hidden, mask_bias, layer):
        hidden = encoder.block(lp, hidden, mask_bias)
        feats = _features(hidden, mask_bias, pooling)
        out, pooled = exit_head(head, feats)
        out = out.astype(jnp.float32)
        parts = [out]
        b = out.shape[0]
        zero = jnp.zeros((b,), jnp.float32)
        max_p = ent = nent = u = zero
        if not is_regression:
            probs = jax.nn.softmax(out, axis=-1)
            parts.append(probs)
            max_p = probs.max(-1)
            ent = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.maximum(probs, 1e-30)),
                                     0.0), axis=-1)
            c = out.shape[-1]
            nent = ent / np.float32(np.log(c)) if c > 1 else zero
        if lte is not None:
            u = lte_certainty(lte, pooled).astype(jnp.float32)
            parts.append(u[:, None])
        if "halting" in head:  # DACT: this layer's halting unit on the raw [CLS] state
            parts.append(halting_value(head["halting"], feats)[:, None])
        parts.append(jnp.ones((b, 1), jnp.float32))
        layer_f = jnp.broadcast_to(layer.astype(jnp.float32), (b,))
        scores = jnp.stack([max_p, ent, nent, u, layer_f], axis=-1)  # [B, 5], gate kinds
        return hidden, jnp.concatenate(parts, axis=-1), scores

    def layer_step(lp, head, lte, hidden, mask_bias, active, layer, gate):
        if counter is not None:
            counter["layer"] = counter.get("layer", 0) + 1
        shapes = jax.eval_shape(compute, lp, head, lte, hidden, mask_bias, layer)

        def skip(_):
            return (hidden, jnp.zeros(shapes[1].shape, jnp.float32),
                    jnp.zeros(shapes[2].shape, jnp.float32))

        hidden, packed, scores = jax.lax.cond(
            active, lambda _: compute(lp, head, lte, hidden, mask_bias, layer), skip, None)
        value = jnp.take(scores, gate[0].astype(jnp.int32), axis=-1)
        stop = jnp.where(gate[2] > 0, value >= gate[1], value < gate[1])
        return hidden, packed, jnp.logical_and(active, jnp.logical_not(jnp.all(stop)))

    return layer_step


def unpack(row: np.ndarray, num_outputs: int, is_regression: bool, has_lte: bool,
           has_halting: bool = False) -> LayerOutput:
    """One example's packed row -> `LayerOutput`."""
    c = num_outputs
    probs = None if is_regression else row[c:2 * c]
    i = c if is_regression else 2 * c
    lte = float(row[i]) if has_lte else None
    halting = float(row[i + int(has_lte)]) if has_halting else None
    return LayerOutput(row[:c], probs, lte, halting)


@dataclasses.dataclass
class ExampleResult:
    outputs: np.ndarray  # [C] logits or [1] value at the exit layer
    exit_layer: int  # 1-based
    flops: int
    seconds: float
    num_tokens: int

    @property
    def prediction(self):
        return float(self.outputs[0]) if self.outputs.shape[0] == 1 else int(np.argmax(self.outputs))


@dataclasses.dataclass
class RunResults:
    outputs: np.ndarray  # [N, C]
    exit_layers: np.ndarray  # [N] int
    flops: np.ndarray  # [N] int64
    seconds: np.ndarray  # [N] float
    num_tokens: np.ndarray  # [N] int
    is_regression: bool

    @property
    def predictions(self) -> np.ndarray:
        return self.outputs[:, 0] if self.is_regression else self.outputs.argmax(-1)

    @property
    def avg_exit_layer(self) -> float:
        return float(self.exit_layers.mean())

    @property
    def total_seconds(self) -> float:
        return float(self.seconds.sum())

    @classmethod
    def collect(cls, results: Sequence[ExampleResult], is_regression: bool) -> RunResults:
        return cls(np.stack([r.outputs for r in results]),
                   np.array([r.exit_layer for r in results], np.int32),
                   np.array([r.flops for r in results], np.int64),
                   np.array([r.seconds for r in results], np.float64),
                   np.array([r.num_tokens for r in results], np.int32), is_regression)


def examples_from_batch(batch: Batch):
    """Yields (input_ids, token_type_ids) of each row's real tokens (attention mask 1)."""
    ids = np.asarray(batch.input_ids)
    tt = np.asarray(batch.token_type_ids)
    mask = np.asarray(batch.attention_mask).astype(bool)
    for i in range(ids.shape[0]):
        if mask[i].any():
            yield ids[i][mask[i]], tt[i][mask[i]]


class EarlyExitRunner:
    """Batch-1 adaptive inference for a multi-exit model (`jaxit.methods.early_exit` params).

    runner = EarlyExitRunner(encoder, params, num_outputs=2, is_regression=False)
    # pooling="mean" for models trained with mean-pooled exit heads
    runner.warmup()
    results = runner.run(batch, ConfidencePolicy(0.9))     # RunResults
    static = runner.run_static(batch)                      # the full model, one call
    """

    def __init__(self, encoder: Encoder, params: dict, num_outputs: int, is_regression: bool,
                 buckets: Sequence[int] = DEFAULT_BUCKETS, pipeline: bool = True,
                 pooling: str = "cls"):
        cfg = encoder.config
        self.pipeline = pipeline
        self.encoder, self.config = encoder, cfg
        self.num_outputs, self.is_regression = int(num_outputs), bool(is_regression)
        self.num_layers = cfg.num_layers
        self.buckets = tuple(sorted(b for b in buckets if b <= cfg.max_position_embeddings))
        if not self.buckets:
            raise ValueError(f"no bucket fits max_position_embeddings {cfg.max_position_embeddings}")
        params = jax.device_put(params)
        enc, heads = params["encoder"], params["heads"]
        self.has_lte = "lte" in heads
        # Sliced once here, never per call.
        self._embed_params = {k: v for k, v in enc.items() if k not in ("layers", "pooler")}
        self._layers = [encoder.layer_params(enc, i) for i in range(self.num_layers)]
        stacked = stacked_heads({"exits": heads["exits"], "final": heads["final"]})
        self.has_halting = "halting" in heads
        if self.has_halting:  # DACT: each layer's halting unit travels with its exit head
            stacked = {**stacked, "halting": heads["halting"]}
        self._heads = [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(self.num_layers)]
        self._lte = heads.get("lte")
        self._final_head = heads["final"]
        self._layer_ids = [jax.device_put(np.int32(i)) for i in range(1, self.num_layers + 1)]
        self._true = jax.device_put(np.bool_(True))
        self._no_gate = jax.device_put(np.array([GATE_LAYER, np.inf, GATE_GE], np.float32))
        self._gate_cache: dict = {}
        self.reruns = 0  # pipelined layers re-run because the device gate disagreed
        self.trace_counts: dict = {}

        counts = self.trace_counts

        def embed_step(embed_params, ids, tt, mask):
            counts["embed"] = counts.get("embed", 0) + 1
            hidden = encoder.embed(embed_params, Batch(ids, tt, mask))
            return hidden, mask_bias_from(mask, hidden.dtype)

        def full_step(embed_params, layers, final_head, ids, tt, mask):
            # The static model: one executable, layers unrolled over the pre-sliced params
            # (on CPU markedly faster than a lax.scan over the stacked params).
            counts["full"] = counts.get("full", 0) + 1
            hidden = encoder.embed(embed_params, Batch(ids, tt, mask))
            bias = mask_bias_from(mask, hidden.dtype)
            for lp in layers:
                hidden = encoder.block(lp, hidden, bias)
            out, _ = exit_head(final_head, _features(hidden, bias, pooling))
            return out.astype(jnp.float32)

        layer_fn = make_layer_step(encoder, self.is_regression, pooling=pooling)

        def first_step(embed_params, lp, head, lte, inputs, active, layer, gate):
            # embedding fused with layer 1: one dispatch less per example
            counts["first"] = counts.get("first", 0) + 1
            ids, tt, mask = inputs[0], inputs[1], inputs[2]
            hidden = encoder.embed(embed_params, Batch(ids, tt, mask))
            bias = mask_bias_from(mask, hidden.dtype)
            hidden, packed, next_active = layer_fn(lp, head, lte, hidden, bias, active, layer,
                                                   gate)
            return hidden, bias, packed, next_active

        self.embed_step = jax.jit(embed_step)
        self.layer_step = jax.jit(make_layer_step(encoder, self.is_regression, counts, pooling))
        self.first_step = jax.jit(first_step)
        self.full_step = jax.jit(full_step)
        self._pad_id = cfg.pad_token_id

    # ------------------------------------------------------------------ inputs

    def bucket(self, n: int) -> int:
        for b in self.buckets:
            if n <= b:
                return b
        raise ValueError(f"{n} tokens exceed the largest length bucket {self.buckets[-1]}")

    def pad(self, input_ids, token_type_ids=None):
        """Real tokens -> (ids, token types, mask) [1, bucket] numpy arrays."""
        input_ids = np.asarray(input_ids, np.int32).reshape(-1)
        n = input_ids.shape[0]
        t = self.bucket(n)
        ids = np.full((1, t), self._pad_id, np.int32)
        tt = np.zeros((1, t), np.int32)
        mask = np.zeros((1, t), np.int32)
        ids[0, :n] = input_ids
        if token_type_ids is not None:
            tt[0, :n] = np.asarray(token_type_ids, np.int32).reshape(-1)
        mask[0, :n] = 1
        return ids, tt, mask

    def warmup(self, buckets: Sequence[int] | None = None, static: bool = True) -> None:
        """Compiles every function for every bucket (then nothing compiles again)."""
        for b in buckets or self.buckets:
            ids = np.full((b,), 101, np.int32)
            self.run_one(ids, None, NeverExit(), pipeline=False)
            self.run_one(ids, None, FixedLayerPolicy(1), pipeline=True)  # skipped-layer path
            if static:
                self.run_static_one(ids, None)

    # ------------------------------------------------------------------ running

    def run_one(self, input_ids, token_type_ids, policy: ExitPolicy,
                pipeline: bool | None = None) -> ExampleResult:
        """One example through the layers until `policy` says stop (or the last layer).

        With `pipeline` (default: the runner's setting) and a policy that has a device gate,
        layer l+1 is dispatched before layer l's outputs are read on the host, so the host
        round trip overlaps the device's work; a layer dispatched after a stop is skipped on
        the device. Otherwise one host round trip per layer. Same results either way.
        """
        start = time.perf_counter()
        n = int(np.asarray(input_ids).size)
        inputs = np.stack(self.pad(input_ids, token_type_ids))  # [3, 1, T]: one transfer
        policy.reset()
        use_pipeline = self.pipeline if pipeline is None else pipeline
        gate = self._gate(policy) if use_pipeline else None
        first = self.first_step(self._embed_params, self._layers[0], self._heads[0], self._lte,
                                inputs, self._true, self._layer_ids[0],
                                self._no_gate if gate is None else gate)
        if gate is None:
            layer, out = self._loop(first, policy)
        else:
            layer, out = self._pipelined_loop(first, policy, gate)
        answer = getattr(policy, "answer", None)  # DACT answers from its accumulator
        outputs = np.array(out.outputs if answer is None else answer())
        seconds = time.perf_counter() - start
        flops = flops_lib.early_exit_flops(self.config, n, layer, self.num_outputs,
                                           self.has_lte or self.has_halting)
        return ExampleResult(outputs, layer, flops, seconds, n)

    def _gate(self, policy):
        g = device_gate(policy)
        if g is None:
            return None
        key = g.tobytes()
        if key not in self._gate_cache:
            self._gate_cache[key] = jax.device_put(g)
        return self._gate_cache[key]

    def _unpack(self, packed) -> tuple[np.ndarray, LayerOutput]:
        row = np.asarray(packed)[0]
        return row, unpack(row, self.num_outputs, self.is_regression, self.has_lte,
                           self.has_halting)

    def _loop(self, first, policy):
        """One host round trip per layer."""
        step, lte, true, gate = self.layer_step, self._lte, self._true, self._no_gate
        hidden, bias, packed, _ = first
        last, layer = self.num_layers, 1
        while True:
            _, out = self._unpack(packed)
            if policy.update(layer, out) or layer == last:
                return layer, out
            hidden, packed, _ = step(self._layers[layer], self._heads[layer], lte, hidden, bias,
                                     true, self._layer_ids[layer], gate)
            layer += 1

    def _pipelined_loop(self, first, policy, gate):
        """Layer l+1 is in the device queue while the host reads layer l."""
        step, lte, true = self.layer_step, self._lte, self._true
        layers, heads, lids, last = self._layers, self._heads, self._layer_ids, self.num_layers
        h1, bias, packed1, active2 = first

        def dispatch(l, h, active):  # l is 1-based
            return step(layers[l - 1], heads[l - 1], lte, h, bias, active, lids[l - 1], gate)

        layer, h_in = 1, None  # h_in: the input of `layer` (layer 1 always runs)
        cur = (h1, packed1, active2)
        while True:
            h_l, packed, next_active = cur
            nxt = dispatch(layer + 1, h_l, next_active) if layer < last else None
            row, out = self._unpack(packed)
            if row[-1] == 0.0:  # the device gate stopped before this layer, the host did not
                self.reruns += 1  # (a rounding boundary case): run it for real
                cur = dispatch(layer, h_in, true)
                continue
            if policy.update(layer, out) or layer == last:
                return layer, out
            h_in, cur, layer = h_l, nxt, layer + 1

    def run(self, inputs, policy: ExitPolicy) -> RunResults:
        """`inputs`: a `Batch` (rows taken one at a time, padding removed) or an iterable of
        (input_ids, token_type_ids) pairs of real tokens."""
        examples = examples_from_batch(inputs) if isinstance(inputs, Batch) else inputs
        results = [self.run_one(ids, tt, policy) for ids, tt in examples]
        return RunResults.collect(results, self.is_regression)

    def run_static_one(self, input_ids, token_type_ids) -> ExampleResult:
        """The static full model (all layers + last head) in one jitted call."""
        start = time.perf_counter()
        n = int(np.asarray(input_ids).size)
        ids, tt, mask = self.pad(input_ids, token_type_ids)
        out = np.asarray(self.full_step(self._embed_params, self._layers,
                                        self._final_head, ids, tt, mask))[0]
        seconds = time.perf_counter() - start
        flops = flops_lib.full_model_flops(self.config, n, self.num_outputs)
        return ExampleResult(out, self.num_layers, flops, seconds, n)

    def run_static(self, inputs) -> RunResults:
        examples = examples_from_batch(inputs) if isinstance(inputs, Batch) else inputs
        results = [self.run_static_one(ids, tt) for ids, tt in examples]
        return RunResults.collect(results, self.is_regression)

    def full_flops(self, num_tokens: Iterable[int]) -> np.ndarray:
        """Static full-model FLOPs for each token count."""
        return np.array([flops_lib.full_model_flops(self.config, int(n), self.num_outputs)
                         for n in num_tokens], np.int64)
