"""Host-side adaptive runner for multi-exit models at batch 1 (the papers' setting).

Three ways through the layers, all giving the policy's results (the host's policy decides):

- fused (default, policies with a device gate: threshold rules and DACT's bound): ONE
  executable per example (`make_fused_run`) unrolls the layers, each under a `lax.cond`
  that runs it only while no earlier layer's gate said stop; DACT's (a, p) are carried on
  the device. The host replays the policy on the returned per-layer outputs and, where
  float32 on the device and float64 on the host disagree, cuts the run short or goes on
  layer by layer. No per-layer dispatch or host round trip at all.
- pipelined (threshold rules, `fused=False`): a Python loop over layers calls ONE
  jit-compiled per-layer function (`make_layer_step`)

    layer_step(layer_params, head_params, lte_params, hidden [B, T, D], mask_bias [B, T],
               active, layer, gate) -> (hidden [B, T, D], packed [B, K], next_active)

  where `packed` holds the layer's exit outputs (logits or value, softmax probabilities,
  LTE u, DACT's h) so that one small device->host transfer per layer brings the exit
  decision's inputs to the host; layer l+1 is dispatched before the host reads layer l, and
  the device skips it when its copy of the rule says stop (see `policies.device_gate`).
  This hides the per-layer host round trip behind the device's work.
- one host round trip per layer with the same `layer_step`: stateful rules (patience,
  ELBERT's window), or both flags off.

The same compiled functions serve every layer (layer params are arguments, sliced once when
the runner is built). Token counts are padded up to a fixed set of length buckets, so after
`warmup()` nothing is ever compiled again: at most one executable per bucket for each of
the fused run, the layer step and the static full model.

The policy is a separate object (`jaxit.inference.policies`): `reset()` before an example,
`update(layer, LayerOutput) -> stop?` after each layer. The compiled pieces are in
`exit_steps.py`, input bucketing and padding in `buckets.py`; the batched engine
(`engine.py`) runs the same models and policies at any batch size.

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
from jaxit.encoders.transformer import Encoder, mask_bias_from
from jaxit.heads import head_cost, stacked_heads
from jaxit.inference.buckets import (  # noqa: F401  (re-exported: the runners' old home)
    DEFAULT_BUCKETS,
    bucket_for,
    examples_from_batch,
    examples_from_dataset,
    load_runner_examples,
    pad_to_bucket,
)
from jaxit.inference.exit_steps import (  # noqa: F401  (re-exported)
    dact_gate_step,
    exit_outputs,
    gate_stop,
    make_fused_run,
    make_layer_compute,
    make_layer_step,
    unpack,
)
from jaxit.inference.policies import (
    GATE_DACT,
    GATE_GE,
    GATE_LAYER,
    ExitPolicy,
    FixedLayerPolicy,
    LayerOutput,
    NeverExit,
    device_gate,
)


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


class EarlyExitRunner:
    """Batch-1 adaptive inference for a multi-exit model (`jaxit.methods.early_exit` params).

    runner = EarlyExitRunner(encoder, params, num_outputs=2, is_regression=False)
    # pooling="mean" for models trained with mean-pooled exit heads
    runner.warmup()
    results = runner.run(batch, ConfidencePolicy(0.9))     # RunResults
    static = runner.run_static(batch)                      # the full model, one call

    Three ways through the layers, same results: `fused` (default, for policies with a
    device gate: threshold rules and DACT) runs every layer in one dispatch and stops on the
    device; `pipeline` dispatches layer l+1 before reading layer l (threshold rules); and
    one host round trip per layer (stateful rules: patience, ELBERT; or both flags off).
    """

    def __init__(self, encoder: Encoder, params: dict, num_outputs: int, is_regression: bool,
                 buckets: Sequence[int] = DEFAULT_BUCKETS, pipeline: bool = True,
                 pooling: str = "cls", fused: bool = True):
        cfg = encoder.config
        self.pipeline, self.fused = pipeline, fused
        self.encoder, self.config = encoder, cfg
        self.num_outputs, self.is_regression = int(num_outputs), bool(is_regression)
        self.num_layers = cfg.num_layers
        self.buckets = tuple(sorted(b for b in buckets if b <= cfg.max_position_embeddings))
        if not self.buckets:
            raise ValueError(f"no bucket fits max_position_embeddings {cfg.max_position_embeddings}")
        params = jax.device_put(params)
        enc, heads = params["encoder"], params["heads"]
        self.has_lte = "lte" in heads
        self.head_cost = head_cost(heads["final"], pooling)  # FLOPs of one exit head
        # Sliced once here, never per call.
        self._embed_params = {k: v for k, v in enc.items() if k not in ("layers", "pooler")}
        self._layers = [encoder.layer_params(enc, i) for i in range(self.num_layers)]
        stacked = stacked_heads(heads)
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
        self.fused_disagreements = 0  # fused runs where the host's policy overrode the device
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
            out, _ = exit_outputs(final_head, hidden, bias, pooling)
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
        self.fused_step = jax.jit(make_fused_run(encoder, self.num_outputs, self.is_regression,
                                                 self.has_lte, self.has_halting, counts, pooling))
        self._pad_id = cfg.pad_token_id

    # ------------------------------------------------------------------ inputs

    def bucket(self, n: int) -> int:
        return bucket_for(n, self.buckets)

    def pad(self, input_ids, token_type_ids=None):
        """Real tokens -> (ids, token types, mask) [1, bucket] numpy arrays."""
        return pad_to_bucket(input_ids, token_type_ids, self.buckets, self._pad_id)

    def warmup(self, buckets: Sequence[int] | None = None, static: bool = True) -> None:
        """Compiles every function the runner's settings use, for every bucket (then nothing
        compiles again): the round-trip step, and the fused run (`fused`) or the pipelined
        step (`pipeline` without `fused`)."""
        for b in buckets or self.buckets:
            ids = np.full((b,), 101, np.int32)
            self.run_one(ids, None, NeverExit(), pipeline=False, fused=False)
            if self.fused:
                self.run_one(ids, None, FixedLayerPolicy(1), fused=True)
            elif self.pipeline:  # the skipped-layer path
                self.run_one(ids, None, FixedLayerPolicy(1), pipeline=True, fused=False)
            if static:
                self.run_static_one(ids, None)

    # ------------------------------------------------------------------ running

    def run_one(self, input_ids, token_type_ids, policy: ExitPolicy,
                pipeline: bool | None = None, fused: bool | None = None) -> ExampleResult:
        """One example through the layers until `policy` says stop (or the last layer).

        With `fused` (default: the runner's setting) and a policy that has a device gate, all
        layers run in one dispatch that stops on the device; the host then replays the
        policy on the returned per-layer outputs and goes on layer by layer if it disagrees.
        With `pipeline` and a threshold gate, layer l+1 is dispatched before layer l's
        outputs are read on the host, so the host round trip overlaps the device's work; a
        layer dispatched after a stop is skipped on the device. Otherwise one host round
        trip per layer. The host's policy decides in every mode: same results either way.
        """
        start = time.perf_counter()
        n = int(np.asarray(input_ids).size)
        inputs = np.stack(self.pad(input_ids, token_type_ids))  # [3, 1, T]: one transfer
        policy.reset()
        use_fused = self.fused if fused is None else fused
        use_pipeline = self.pipeline if pipeline is None else pipeline
        gate = self._gate(policy, allow_dact=use_fused) if (use_fused or use_pipeline) else None
        if gate is not None and use_fused:
            layer, out = self._fused_loop(inputs, policy, gate)
        else:  # `_gate` gave no DACT gate here: its bound needs the fused path's (a, p)
            first = self.first_step(self._embed_params, self._layers[0], self._heads[0],
                                    self._lte, inputs, self._true, self._layer_ids[0],
                                    self._no_gate if gate is None else gate)
            if gate is None:
                layer, out = self._loop(first, policy)
            else:
                layer, out = self._pipelined_loop(first, policy, gate)
        answer = getattr(policy, "answer", None)  # DACT answers from its accumulator
        outputs = np.array(out.outputs if answer is None else answer())
        seconds = time.perf_counter() - start
        flops = flops_lib.early_exit_flops(self.config, n, layer, self.num_outputs,
                                           self.has_lte or self.has_halting, self.head_cost)
        return ExampleResult(outputs, layer, flops, seconds, n)

    def _gate(self, policy, allow_dact: bool = True):
        g = device_gate(policy)
        if g is None or (g[0] == GATE_DACT and not allow_dact):
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
        hidden, bias, packed, _ = first
        _, out = self._unpack(packed)
        if policy.update(1, out) or self.num_layers == 1:
            return 1, out
        return self._round_trips(hidden, bias, 1, policy)

    def _round_trips(self, hidden, bias, layer: int, policy):
        """Layers layer+1, ... with one host round trip each; `policy` has seen 1..layer and
        `hidden` is layer `layer`'s output."""
        step, lte, true, gate = self.layer_step, self._lte, self._true, self._no_gate
        while True:
            hidden, packed, _ = step(self._layers[layer], self._heads[layer], lte, hidden, bias,
                                     true, self._layer_ids[layer], gate)
            layer += 1
            _, out = self._unpack(packed)
            if policy.update(layer, out) or layer == self.num_layers:
                return layer, out

    def _fused_loop(self, inputs, policy, gate):
        """All layers in one dispatch; the host replays `policy` on the per-layer rows."""
        hidden, bias, packed, exit_dev = self.fused_step(
            self._embed_params, self._layers, self._heads, self._lte, inputs, gate)
        rows, exit_dev = jax.device_get((packed, exit_dev))
        exit_dev = int(exit_dev)
        for layer in range(1, exit_dev + 1):
            out = unpack(rows[layer - 1, 0], self.num_outputs, self.is_regression,
                         self.has_lte, self.has_halting)
            if policy.update(layer, out) or layer == self.num_layers:
                if layer < exit_dev:  # float32 on the device went on where float64 stops
                    self.fused_disagreements += 1
                return layer, out
        self.fused_disagreements += 1  # the device stopped, the host goes on
        return self._round_trips(hidden, bias, exit_dev, policy)

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
        flops = flops_lib.full_model_flops(self.config, n, self.num_outputs, self.head_cost)
        return ExampleResult(out, self.num_layers, flops, seconds, n)

    def run_static(self, inputs) -> RunResults:
        examples = examples_from_batch(inputs) if isinstance(inputs, Batch) else inputs
        results = [self.run_static_one(ids, tt) for ids, tt in examples]
        return RunResults.collect(results, self.is_regression)

    def full_flops(self, num_tokens: Iterable[int]) -> np.ndarray:
        """Static full-model FLOPs for each token count."""
        return np.array([flops_lib.full_model_flops(self.config, int(n), self.num_outputs,
                                                    self.head_cost)
                         for n in num_tokens], np.int64)
