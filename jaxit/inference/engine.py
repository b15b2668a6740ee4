"""The batched adaptive engine: every dispatch a full static-shape batch, at any batch size.

    engine = BatchedEngine(encoder, params, num_outputs=2, is_regression=False, pooling="mean")
    engine.warmup(ConfidencePolicy(0.9))     # compiles every (kind, bucket, batch size)
    res = engine.run(examples, ConfidencePolicy(0.9))   # EngineResults
    static = engine.run_static(examples)    # the full model, same buckets and batch sizes

One engine for every method: multi-exit models (any strategy, LTE), DACT (halting units),
AdapLeR (contribution predictors) and models with both exits and CPs. Examples wait in
queues in front of each (layer, length bucket); their hidden states stay on the device in a
pool per bucket (`engine_steps`). The scheduler runs the deepest queue that fills a batch,
else admits new examples (embedding + layer 1), else, when nothing is in flight, flushes the
fullest queue at the smallest batch size that holds it. An example that exits leaves at
once and frees its slot; one that keeps going joins the next layer's queue (for token
dropping, the queue of the bucket that holds its kept tokens). Exit and keep decisions are
made on the device; each dispatch returns one small packed array [b, K], read on the host
only after the next dispatch has been queued, so the device never waits for the host.
Per-example rule state (DACT's a and p, PABEE's counter, ELBERT's window) is a row of an
array that travels with the example. With several local devices, each dispatch is sharded
over a data mesh: every device runs its own rows from its own shard of the pools.

Results equal the batch-1 runners' (`EarlyExitRunner`, `TokenDropRunner`) for any batch
size and arrival order, up to float32 rounding at a decision boundary; nothing compiles
after `warmup()` (`trace_counts`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxit import flops as flops_lib
from jaxit.encoders.transformer import Encoder, compute_dtype
from jaxit.heads import has_exit_heads, head_cost, stacked_heads
from jaxit.inference.buckets import DEFAULT_BUCKETS
from jaxit.inference.device_rules import DeviceRule, device_rule
from jaxit.inference.engine_results import EngineResults
from jaxit.inference.engine_run import EngineRun, pack_ids
from jaxit.inference.engine_steps import ModelSpec, make_static_step, make_step
from jaxit.inference.policies import NeverExit
from jaxit.methods.adapler import cp_layer

DEFAULT_BATCH_SIZES = (1, 4, 8, 16, 32)
POOL_BYTES = 256 * 2**20  # default cap on one pool's memory per device


class BatchedEngine:
    """Batched adaptive inference for a trained model's params (see the module docstring).

    params: {"encoder", "heads": {"final", ["exits"], ["lte"], ["halting"], ["cp", "eta"]}}.
    buckets: padded lengths; batch_sizes: rows per device of a dispatch (the largest is the
    batch the scheduler fills); devices: the data mesh (default: every local device);
    pool_slots: slots per pool and device (default: enough for full batches everywhere,
    capped at POOL_BYTES); eta: overrides the trained η (token dropping).
    """

    def __init__(self, encoder: Encoder, params: dict, num_outputs: int, is_regression: bool,
                 pooling: str = "cls", buckets: Sequence[int] = DEFAULT_BUCKETS,
                 batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, devices=None,
                 pool_slots: int | None = None, eta=None):
        cfg = encoder.config
        heads = params["heads"]
        if "final" not in heads:
            raise ValueError("params['heads'] has no 'final' exit head")
        self.encoder, self.config = encoder, cfg
        L = self.num_layers = cfg.num_layers
        self.spec = ModelSpec(L, int(num_outputs), bool(is_regression), pooling,
                              has_exit_heads(heads), "lte" in heads, "halting" in heads,
                              "cp" in heads)
        self.buckets = tuple(sorted(int(b) for b in buckets if b <= cfg.max_position_embeddings))
        if not self.buckets:
            raise ValueError(f"no bucket fits max_position_embeddings {cfg.max_position_embeddings}")
        self.batch_sizes = tuple(sorted({int(b) for b in batch_sizes if int(b) > 0}))
        if not self.batch_sizes:
            raise ValueError(f"batch_sizes must hold positive sizes, got {batch_sizes}")
        self.bmax = self.batch_sizes[-1]
        devices = list(devices) if devices is not None else jax.local_devices()
        self.mesh = Mesh(np.asarray(devices), ("data",))
        self.ndev = len(devices)
        self._rows = NamedSharding(self.mesh, P("data"))
        self._ids_sharding = NamedSharding(self.mesh, P(None, "data"))
        put = self.put
        enc = params["encoder"]
        self._embed = put({k: v for k, v in enc.items() if k not in ("layers", "pooler")})
        self._layers = [put(encoder.layer_params(enc, i)) for i in range(L)]
        if self.spec.has_exits:
            stacked = stacked_heads(heads)
            if self.spec.has_halting:
                stacked = {**stacked, "halting": heads["halting"]}
            self._heads = [put(jax.tree.map(lambda x, i=i: x[i], stacked)) for i in range(L)]
        else:
            self._heads = [put(heads["final"])] * L
        self._final = put(heads["final"])
        self.head_cost = head_cost(heads["final"], self.spec.pooling)  # FLOPs of one exit head
        self._lte = put(heads["lte"]) if self.spec.has_lte else None
        if self.spec.has_cp:
            self._cps = [put(cp_layer(heads["cp"], i)) for i in range(L)]
            self.cp_hidden = int(np.shape(heads["cp"]["hidden"]["kernel"])[-1])
            self.set_eta(heads["eta"] if eta is None else eta)
        else:
            self.cp_hidden = None
        self._layer_ids = [put(np.int32(i)) for i in range(L + 1)]
        self._pool_slots = pool_slots
        self._pools: dict[int, jax.Array] = {}
        self._compiled: dict = {}
        self.trace_counts: dict = {}
        rep = NamedSharding(self.mesh, P())
        self._static = jax.jit(make_static_step(encoder, self.spec, self.trace_counts),
                               in_shardings=(rep, rep, rep, self._ids_sharding))

    # ------------------------------------------------------------------ settings

    def put(self, tree):
        """`tree` replicated on every device of the mesh."""
        return jax.device_put(tree, NamedSharding(self.mesh, P()))

    def set_eta(self, eta) -> None:
        """η (a scalar or [L], >= 0; token dropping) without recompiling."""
        if not self.spec.has_cp:
            raise ValueError("eta is for models with contribution predictors (AdapLeR)")
        eta = np.broadcast_to(np.asarray(eta, np.float32), (self.num_layers,)).copy()
        if not np.all(np.isfinite(eta)) or np.any(eta < 0):
            raise ValueError(f"eta must be finite and >= 0, got {eta}")
        self.eta = eta
        self._etas = [self.put(np.float32(e)) for e in eta]

    def slots(self, k: int) -> int:
        """Slots per device of bucket k's pool (the last one is a scratch row)."""
        if self._pool_slots:
            return int(self._pool_slots) + 1
        queues = self.num_layers * ((k + 1) if self.spec.has_cp else 1) + 2
        itemsize = np.dtype(compute_dtype(self.config)).itemsize
        cap = POOL_BYTES // (self.buckets[k] * self.config.hidden_size * itemsize)
        return int(max(min(queues * self.bmax, cap), 2 * self.bmax)) + 1

    def _pool(self, k: int):
        if k not in self._pools:
            shape = (self.ndev * self.slots(k), self.buckets[k], self.config.hidden_size)
            zeros = np.zeros(shape, compute_dtype(self.config))
            self._pools[k] = jax.device_put(zeros, self._rows)
        return self._pools[k]

    def _fn(self, kind: str, k: int, b: int, rule: DeviceRule):
        ns = 1 if kind != "layer" or not self.spec.has_cp else len(self.buckets) - k
        key = (kind, k, b, ns, rule.static_key)
        if key not in self._compiled:
            step, _ = make_step(self.encoder, self.spec, rule, kind, self.buckets[k], ns,
                                self.trace_counts)
            if self.ndev > 1:
                d = P("data")
                step = jax.shard_map(step, mesh=self.mesh, in_specs=(
                    d, d, P(), d, d, P(), P(None, "data")), out_specs=(d, d))
            rows, rep = self._rows, NamedSharding(self.mesh, P())
            # where the arguments go: host arrays (ctrl, state, ids) arrive as numpy
            self._compiled[key] = jax.jit(step, donate_argnums=0, in_shardings=(
                rows, rows, rep, rows, rows, rep, self._ids_sharding))
        return self._compiled[key], ns

    def _weights(self, kind: str, layer: int, rule_params) -> dict:
        """The params one dispatch of `kind` at `layer` reads (rule_params: on the mesh)."""
        rp = rule_params
        if kind == "embed":
            return {"embed": self._embed, "cp": self._cps[0], "eta": self._etas[0]}
        w = {"layer": self._layers[layer - 1], "head": self._heads[layer - 1],
             "lte": self._lte, "rule": rp}
        if kind == "first":
            w["embed"] = self._embed
        if self.spec.has_cp:
            i = min(layer, self.num_layers - 1)
            w["cp"], w["eta"] = self._cps[i], self._etas[i]
        return w

    def bucket_index(self, n) -> np.ndarray:
        """Index of the smallest bucket holding n tokens (n: an int or an array)."""
        idx = np.searchsorted(np.asarray(self.buckets), np.asarray(n), side="left")
        if np.any(idx >= len(self.buckets)):
            raise ValueError(f"{int(np.max(n))} tokens exceed the largest length bucket "
                             f"{self.buckets[-1]}")
        return idx

    def size_to_run(self, rows: int) -> int:
        """How many of `rows` waiting rows (per device) to run now: the largest batch, or
        the smallest size that holds them when they fill it to at least 3/4, else the
        largest size they fill (the rest runs next)."""
        if rows >= self.bmax:
            return self.bmax
        hi = self.size_for(max(rows, 1))
        if 4 * rows >= 3 * hi:
            return hi
        return max([s for s in self.batch_sizes if s <= rows] or [hi])

    def size_for(self, rows: int) -> int:
        """The smallest batch size holding `rows` rows per device."""
        return next(s for s in self.batch_sizes if s >= rows)

    # ------------------------------------------------------------------ warm-up

    def warmup(self, *policies, static: bool = True) -> None:
        """Compiles (and runs once, on scratch rows) every dispatch the policies' rules use,
        for every bucket and batch size, and with `static` the static model's; nothing
        compiles afterwards. Default: NeverExit. (Compiling ahead of time in threads measured
        13 % faster on 2 cores but retraced at the first call: not used.)"""
        rules = {}
        for p in policies or (NeverExit(),):
            rule = self.rule_for(p)
            rules[rule.static_key] = rule
        empty = [[] for _ in range(self.ndev)]
        first = "embed" if self.spec.has_cp else "first"
        for rule in rules.values():
            for k in range(len(self.buckets)):
                for b in self.batch_sizes:
                    for kind in (first, "layer"):
                        run = EngineRun(self, rule, [], None)
                        np.asarray(run.dispatch(kind, 1, k, empty, b)[-1])
        if static:
            for t in self.buckets:
                for b in self.batch_sizes:
                    ids = np.zeros((3, self.ndev * b, t), np.int32)
                    np.asarray(self._static(self._embed, self._layers, self._final, ids))

    # ------------------------------------------------------------------ running

    def rule_for(self, policy) -> DeviceRule:
        return device_rule(policy, self.num_layers, self.spec.num_outputs,
                           self.spec.is_regression)

    def run(self, examples, policy=None, progress: Callable[[int], None] | None = None
            ) -> EngineResults:
        """Runs (input_ids [n], token_type_ids [n] or None) pairs of real tokens through the
        model with `policy` (default NeverExit; models with CPs drop tokens whatever the
        policy). `progress(k)` is called with the number of examples finished so far."""
        examples = [(np.asarray(i, np.int32).reshape(-1), t) for i, t in examples]
        run = EngineRun(self, self.rule_for(policy or NeverExit()), examples, progress)
        start = time.perf_counter()
        run.loop()
        return run.results(time.perf_counter() - start)

    def run_static(self, examples) -> EngineResults:
        """The static full model on the same length buckets and batch sizes: examples grouped
        by bucket (arrival order within one), batches of the largest size, the last one of a
        bucket at the smallest size that holds it."""
        examples = [(np.asarray(i, np.int32).reshape(-1), t) for i, t in examples]
        n = np.array([e[0].size for e in examples], np.int32)
        if (n == 0).any():
            raise ValueError("empty input: at least [CLS] is needed")
        ks = self.bucket_index(n)
        out = np.zeros((len(examples), self.spec.num_outputs), np.float32)
        start = time.perf_counter()
        chunk = self.ndev * self.bmax
        for k in range(len(self.buckets)):
            members = np.flatnonzero(ks == k)
            for s in range(0, members.size, chunk):
                rows = members[s:s + chunk]
                b = self.size_for(-(-rows.size // self.ndev))
                ids = pack_ids(examples, rows, self.ndev * b, self.buckets[k],
                                self.config.pad_token_id)
                res = self._static(self._embed, self._layers, self._final, ids)
                out[rows] = np.asarray(res)[:rows.size]
        seconds = time.perf_counter() - start
        L = self.num_layers
        flops = np.array([flops_lib.full_model_flops(self.config, int(m), self.spec.num_outputs,
                                                     self.head_cost) for m in n], np.int64)
        return EngineResults(out, np.full(len(n), L, np.int32), np.tile(n[:, None], (1, L)),
                             flops, flops.copy(), n, self.spec.is_regression, seconds, {})
