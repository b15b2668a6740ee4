"""The batched engine's host loop for one run: queues, slots, scheduling, results.

Host state is a handful of numpy arrays over the run's examples (where each example's hidden
states live: bucket and slot; its valid-token count; its rule state row) and deques of
example indices: one per (stage, bucket, device). Stage s >= 1 is "layer s runs next";
stage 0 holds examples not yet embedded (per input bucket, shared by the devices).
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from jaxit import flops as flops_lib
from jaxit.inference.engine_results import EngineResults, example_flops
from jaxit.inference.engine_steps import PackedLayout

LOG_FLOOR = 1e-8  # DACT's answer: log a_n (as `DACTPolicy.answer`)


def pack_ids(examples, rows, size: int, t: int, pad_id: int) -> np.ndarray:
    """[3, size, t] int32 (ids, token types, mask) of the given examples, padding after."""
    ids = np.zeros((3, size, t), np.int32)
    ids[0] = pad_id
    for r, e in enumerate(rows):
        tok, tt = examples[e]
        ids[0, r, :tok.size] = tok
        if tt is not None:
            ids[1, r, :tok.size] = np.asarray(tt, np.int32).reshape(-1)
        ids[2, r, :tok.size] = 1
    return ids


class EngineRun:
    """One call of `BatchedEngine.run` (or a warm-up dispatch when `examples` is empty)."""

    def __init__(self, engine, rule, examples, progress):
        self.e, self.rule, self.examples, self.progress = engine, rule, examples, progress
        eng, N, L = engine, len(examples), engine.num_layers
        self.layout = PackedLayout(eng.spec.num_outputs, rule.state_size)
        self.n = np.array([x[0].size for x in examples], np.int32)
        if N and (self.n == 0).any():
            raise ValueError(f"empty input at example {int(np.argmin(self.n))}: at least "
                             "[CLS] is needed")
        self.home = eng.bucket_index(self.n) if N else np.zeros(0, np.int64)
        self.where = self.home.copy()  # the bucket whose pool holds the example
        self.slot = np.full(N, -1, np.int64)
        self.dev = np.zeros(N, np.int64)
        self.count = self.n.copy()
        self.state = np.zeros((N, rule.state_size), np.float32)
        self.tokens = np.zeros((N, L), np.int32)
        self.exit = np.zeros(N, np.int32)
        self.outputs = np.zeros((N, eng.spec.num_outputs), np.float32)
        nb = len(eng.buckets)
        self.free = [[list(range(eng.slots(k) - 2, -1, -1)) for _ in range(eng.ndev)]
                     for k in range(nb)]
        self.inputs = [deque(np.flatnonzero(self.home == k).tolist()) for k in range(nb)]
        self.queues: dict = {}
        self.done = 0
        self.stats = {"dispatches": 0, "rows": 0, "padded_rows": 0, "host_wait_s": 0.0}
        self.scratch = np.array([eng.slots(j) - 1 for j in range(nb)], np.int32)
        self.pos = np.zeros(N, np.int64)
        self._padded: dict = {}
        self._weights: dict = {}
        self._rule_params = None

    # ------------------------------------------------------------------ scheduling

    def queue(self, stage: int, k: int) -> list:
        key = (stage, k)
        if key not in self.queues:
            self.queues[key] = [deque() for _ in range(self.e.ndev)]
        return self.queues[key]

    def fill(self, dqs) -> int:
        return sum(min(len(d), self.e.bmax) for d in dqs)

    def choose(self, pending_stage):
        """(stage, bucket) of the next dispatch, or None (wait for the one in flight, which
        ran layer `pending_stage`; None when nothing is in flight): the deepest full queue;
        else new examples of the input bucket with the most waiting (a full batch, or the
        input's tail) while its pool has free slots; else drain: the fullest queue of the
        shallowest layer that has any, once nothing upstream can still feed it."""
        eng = self.e
        full = eng.ndev * eng.bmax
        ready = [(s, k) for (s, k), dqs in self.queues.items() if self.fill(dqs) >= full]
        if ready:
            return max(ready)  # deepest layer first: it frees slots soonest
        admit = [k for k, q in enumerate(self.inputs)
                 if q and min(len(f) for f in self.free[k]) >= min(eng.bmax, len(q))]
        if admit:
            return (0, max(admit, key=lambda k: len(self.inputs[k])))
        waiting = [(s, -self.fill(dqs), k) for (s, k), dqs in self.queues.items() if any(dqs)]
        if waiting:
            s, _, k = min(waiting)
            if pending_stage is not None and pending_stage < s:
                return None
            return (s, k)
        if pending_stage is not None:
            return None
        tail = [k for k, q in enumerate(self.inputs) if q and any(self.free[k])]
        return (0, max(tail, key=lambda k: len(self.inputs[k]))) if tail else None

    def take(self, stage: int, k: int) -> list:
        """Per device, up to b examples for a dispatch at (stage, bucket k), b from
        `BatchedEngine.size_to_run` for the longest of the devices' queues (a queue's tail
        runs as a few smaller, nearly full batches); rows that move in from a larger
        bucket's pool get a slot in pool k (or wait when it is full)."""
        eng = self.e
        rows = [[] for _ in range(eng.ndev)]
        if stage == 0:
            q = self.inputs[k]
            cap = eng.size_to_run(-(-len(q) // eng.ndev))
            d = 0
            while q and any(len(r) < cap and self.free[k][i] for i, r in enumerate(rows)):
                if len(rows[d]) < cap and self.free[k][d]:
                    ex = q.popleft()
                    self.dev[ex], self.slot[ex], self.where[ex] = d, self.free[k][d].pop(), k
                    rows[d].append(ex)
                d = (d + 1) % eng.ndev
            return rows
        dqs = self.queue(stage, k)
        cap = eng.size_to_run(max(len(dq) for dq in dqs))
        for d, dq in enumerate(dqs):
            while dq and len(rows[d]) < cap:
                ex = dq[0]
                if self.where[ex] != k and not self.free[k][d]:
                    break
                rows[d].append(dq.popleft())
        return rows

    def take_any(self):
        """(stage, bucket, rows) of the fullest queue that can take rows now (a fallback
        when the chosen queue's rows all wait for slots in a full pool)."""
        for _, s, k in sorted(((-self.fill(d), s, k) for (s, k), d in self.queues.items()
                               if any(d))):
            rows = self.take(s, k)
            if any(rows):
                return s, k, rows
        raise RuntimeError("batched engine stalled: every pool is full (raise pool_slots)")

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, kind: str, stage: int, k: int, rows: list, b: int | None = None):
        """Queues one dispatch on the device; returns its packed output (not yet read).
        Rows moving into pool k get their new slot here; their old one is freed (the
        device reads it before any later dispatch can write it)."""
        eng = self.e
        if b is None:
            b = eng.size_for(max(1, max(len(r) for r in rows)))
        fn, ns = eng._fn(kind, k, b, self.rule)
        flat = np.full(eng.ndev * b, -1, np.int64)
        for d, rs in enumerate(rows):
            flat[d * b:d * b + len(rs)] = rs
        real = np.flatnonzero(flat >= 0)
        ex = flat[real]
        ctrl = np.empty((eng.ndev * b, 3 + ns), np.int32)
        ctrl[:, 3:] = self.scratch[k:k + ns]  # scratch rows
        ctrl[:, 2] = 0
        ctrl[:, 1] = 0
        if kind == "layer":
            src = self.where[ex] - k
            ctrl[real, 2] = src
            ctrl[real, 3 + src] = self.slot[ex]
            for i in np.flatnonzero(src):  # rows moving into pool k
                e, d = int(ex[i]), int(self.dev[ex[i]])
                self.free[self.where[e]][d].append(int(self.slot[e]))
                self.slot[e], self.where[e] = self.free[k][d].pop(), k
        ctrl[:, 0] = ctrl[:, 3]
        ctrl[real, 0] = self.slot[ex]
        ctrl[real, 1] = self.count[ex]
        state = np.zeros((eng.ndev * b, self.rule.state_size), np.float32)
        state[real] = self.state[ex]
        ids = None
        if kind != "layer":
            ids = np.zeros((3, eng.ndev * b, eng.buckets[k]), np.int32)
            ids[0] = eng.config.pad_token_id
            ids[:, real] = self.padded_ids(k)[:, self.pos[ex]]
        src_pools = tuple(eng._pool(k + j) for j in range(1, ns))
        # host arrays go to the jitted step as numpy: its in_shardings place them (measured
        # 4-6x cheaper per dispatch than a device_put of the three first, jax 0.10 CPU)
        new_pool, packed = fn(eng._pool(k), src_pools, self.weights(kind, max(stage, 1)),
                              ctrl, state, eng._layer_ids[max(stage, 1)], ids)
        eng._pools[k] = new_pool
        self.stats["dispatches"] += 1
        self.stats["rows"] += real.size
        self.stats["padded_rows"] += flat.size - real.size
        return kind, stage, k, flat, packed

    def weights(self, kind: str, layer: int) -> dict:
        key = (kind, layer)
        if key not in self._weights:
            if self._rule_params is None:
                self._rule_params = self.e.put(self.rule.param_array())
            self._weights[key] = self.e._weights(kind, layer, self._rule_params)
        return self._weights[key]

    def padded_ids(self, k: int) -> np.ndarray:
        """[3, n_k, T_k] ids, token types and mask of the run's examples in input bucket k
        (padded once per run; `self.pos` is an example's column)."""
        if k not in self._padded:
            members = np.flatnonzero(self.home == k)
            self.pos[members] = np.arange(members.size)
            self._padded[k] = pack_ids(self.examples, members, members.size,
                                       self.e.buckets[k], self.e.config.pad_token_id)
        return self._padded[k]

    def finish(self, pending) -> None:
        """Reads a dispatch's packed output and routes its examples."""
        kind, stage, k, flat, packed = pending
        t0 = time.perf_counter()
        packed = np.asarray(packed)
        self.stats["host_wait_s"] += time.perf_counter() - t0
        lay, eng = self.layout, self.e
        real = np.flatnonzero(flat >= 0)
        ex, rows = flat[real], packed[real]
        devs = self.dev[ex]
        if kind == "embed":
            self.count[ex] = rows[:, lay.count].astype(np.int32)
            self.route(1, ex, devs, eng.bucket_index(self.count[ex]))
            return
        layer = max(stage, 1)
        self.tokens[ex, layer - 1] = self.count[ex]
        self.state[ex] = rows[:, lay.state]
        stop = rows[:, lay.stop] > 0.5
        out = ex[stop]
        self.exit[out] = layer
        self.outputs[out] = self.answers(rows[stop])
        for e, d in zip(out.tolist(), devs[stop].tolist()):
            self.free[k][d].append(int(self.slot[e]))
        self.done += out.size
        go = ex[~stop]
        if eng.spec.has_cp:
            self.count[go] = rows[~stop, lay.count].astype(np.int32)
            buckets = eng.bucket_index(self.count[go])
        else:
            buckets = np.full(go.size, k)
        self.route(layer + 1, go, devs[~stop], buckets)
        if self.progress is not None:
            self.progress(self.done)

    def route(self, stage: int, examples, devs, buckets) -> None:
        """Appends each example to the queue of (stage, its bucket) on its device."""
        for e, d, b in zip(examples.tolist(), devs.tolist(), np.asarray(buckets).tolist()):
            self.queue(stage, b)[d].append(e)

    def answers(self, rows) -> np.ndarray:
        """The outputs of exiting rows [n, K]: the head's, or DACT's log a_n (a_n)."""
        lay, spec = self.layout, self.e.spec
        if self.rule.kind != "dact":
            return rows[:, :spec.num_outputs]
        a = rows[:, lay.state][:, :spec.num_outputs]
        return a if spec.is_regression else np.log(np.maximum(a, LOG_FLOOR))

    def loop(self) -> None:
        """Dispatch k + 1 is queued before dispatch k's output is read."""
        first_kind = "embed" if self.e.spec.has_cp else "first"
        pending = None
        while True:
            choice = self.choose(None if pending is None else pending[1])
            if choice is None:
                if pending is None:
                    break
                self.finish(pending)
                pending = None
                continue
            stage, k = choice
            rows = self.take(stage, k)
            if not any(rows):  # pool k is full of rows waiting elsewhere: run those first
                if pending is not None:
                    self.finish(pending)
                    pending = None
                    continue
                stage, k, rows = self.take_any()
            kind = "layer" if stage >= 1 else first_kind
            if kind == "first":
                stage = 1
            nxt = self.dispatch(kind, stage, k, rows)
            if pending is not None:
                self.finish(pending)
            pending = nxt
        if self.done != len(self.examples):
            raise RuntimeError(f"batched engine finished {self.done} of {len(self.examples)}")

    def results(self, seconds: float) -> EngineResults:
        eng, spec = self.e, self.e.spec
        cfg, c = eng.config, spec.num_outputs
        extra = spec.has_lte or spec.has_halting
        fl, full = [], []
        for i in range(len(self.examples)):
            e, n = int(self.exit[i]), int(self.n[i])
            heads = e if spec.has_exits else 1
            fl.append(example_flops(cfg, n, self.tokens[i, :e], c, heads, extra, eng.cp_hidden,
                                    eng.head_cost))
            full.append(flops_lib.full_model_flops(cfg, n, c, eng.head_cost))
        self.stats["host_busy_s"] = seconds - self.stats["host_wait_s"]
        return EngineResults(self.outputs, self.exit, self.tokens, np.array(fl, np.int64),
                             np.array(full, np.int64), self.n, spec.is_regression, seconds,
                             dict(self.stats))
