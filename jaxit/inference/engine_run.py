"""The batched engine's host loop for one run: queues, slots, scheduling, results.

Host state is a handful of numpy arrays over the run's examples (where each example's hidden
states live: bucket and slot; its valid-token count; its rule state row) and deques of
example indices: one per (stage, bucket, device). Stage s >= 1 is "layer s runs next";
stage 0 holds examples not yet embedded (per input bucket, shared by the devices).
"""

from __future__ import annotations

import time
from collections import deque

import jax
import numpy as np

from jaxit.inference.engine_results import EngineResults, example_flops
from jaxit.inference.engine_steps import PackedLayout

LOG_FLOOR = 1e-8  # DACT's answer: log a_n (as `DACTPolicy.answer`)


def pack_ids(examples, rows, size: int, t: int, pad_id: int) -> np.ndarray:
    """[3, size, t] int32 (ids, token types, mask) of the given examples, padding after."""
    ids = np.zeros((3, size, t), np.int32)
    ids[0] = pad_id
    for r, e in enumerate(rows):
        if e < 0:
            continue
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
        self._rule_params = None

    # ------------------------------------------------------------------ scheduling

    def queue(self, stage: int, k: int) -> list:
        key = (stage, k)
        if key not in self.queues:
            self.queues[key] = [deque() for _ in range(self.e.ndev)]
        return self.queues[key]

    def fill(self, dqs) -> int:
        return sum(min(len(d), self.e.bmax) for d in dqs)

    def choose(self, allow_partial: bool):
        """(stage, bucket) of the next dispatch, or None (wait for the one in flight): the
        deepest full queue; else new examples of the input bucket with the most waiting,
        if its pool has a batch of free slots on every device; else, only when nothing is
        in flight, the tail of the input, then the fullest queue."""
        eng = self.e
        full = eng.ndev * eng.bmax
        ready = [(s, k) for (s, k), dqs in self.queues.items() if self.fill(dqs) >= full]
        if ready:
            return max(ready)  # deepest layer first: it frees slots soonest
        roomy = [k for k, q in enumerate(self.inputs)
                 if q and min(len(f) for f in self.free[k]) >= eng.bmax]
        admit = [k for k in roomy if len(self.inputs[k]) >= full]
        if not admit and allow_partial:
            admit = roomy
        if admit:
            return (0, max(admit, key=lambda k: len(self.inputs[k])))
        if not allow_partial:
            return None
        waiting = [(self.fill(dqs), s, k) for (s, k), dqs in self.queues.items()
                   if self.fill(dqs) > 0]
        if waiting:
            return max(waiting)[1:]
        tail = [k for k, q in enumerate(self.inputs) if q and any(self.free[k])]
        return (0, max(tail, key=lambda k: len(self.inputs[k]))) if tail else None

    def take(self, stage: int, k: int) -> list:
        """Per device, up to b examples for a dispatch at (stage, bucket k), b the largest
        batch size that the longest of the devices' queues fills (so that a queue's tail
        runs as a few smaller full batches rather than one padded one); rows that move in
        from a larger bucket's pool get a slot in pool k (or wait when it is full)."""
        eng = self.e
        rows = [[] for _ in range(eng.ndev)]
        if stage == 0:
            q = self.inputs[k]
            cap = eng.size_below(-(-len(q) // eng.ndev))
            d = 0
            while q and any(len(r) < cap and self.free[k][i] for i, r in enumerate(rows)):
                if len(rows[d]) < cap and self.free[k][d]:
                    ex = q.popleft()
                    self.dev[ex], self.slot[ex], self.where[ex] = d, self.free[k][d].pop(), k
                    rows[d].append(ex)
                d = (d + 1) % eng.ndev
            return rows
        dqs = self.queue(stage, k)
        cap = eng.size_below(max(len(dq) for dq in dqs))
        for d, dq in enumerate(dqs):
            while dq and len(rows[d]) < cap:
                ex = dq[0]
                if self.where[ex] != k and not self.free[k][d]:
                    break
                rows[d].append(dq.popleft())
        return rows

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, kind: str, stage: int, k: int, rows: list, b: int | None = None):
        """Queues one dispatch on the device; returns its packed output (not yet read).
        Rows moving into pool k get their new slot here; their old one is freed (the
        device reads it before any later dispatch can write it)."""
        eng = self.e
        if b is None:
            b = eng.size_for(max(1, max(len(r) for r in rows)))
        fn, ns = eng._fn(kind, k, b, self.rule)
        scratch = [eng.slots(k + j) - 1 for j in range(ns)]
        ctrl = np.zeros((eng.ndev * b, 3 + ns), np.int32)
        ctrl[:, 0] = scratch[0]
        ctrl[:, 3:] = scratch
        state = np.zeros((eng.ndev * b, self.rule.state_size), np.float32)
        flat = np.full(eng.ndev * b, -1, np.int64)
        for d, rs in enumerate(rows):
            for i, ex in enumerate(rs):
                r = d * b + i
                flat[r] = ex
                src = int(self.where[ex]) - k
                if kind == "layer":
                    ctrl[r, 2], ctrl[r, 3 + src] = src, self.slot[ex]
                    if src:  # moves into pool k
                        self.free[self.where[ex]][d].append(int(self.slot[ex]))
                        self.slot[ex], self.where[ex] = self.free[k][d].pop(), k
                ctrl[r, 0], ctrl[r, 1] = self.slot[ex], self.count[ex]
                state[r] = self.state[ex]
        ids = None
        if kind != "layer":
            ids = jax.device_put(pack_ids(self.examples, flat, eng.ndev * b, eng.buckets[k],
                                          eng.config.pad_token_id), eng._ids_sharding)
        src_pools = tuple(eng._pool(k + j) for j in range(1, ns))
        weights = eng._weights(kind, max(stage, 1), self.rule)
        new_pool, packed = fn(eng._pool(k), src_pools, weights,
                              jax.device_put(ctrl, eng._rows), jax.device_put(state, eng._rows),
                              eng._layer_ids[max(stage, 1)], ids)
        eng._pools[k] = new_pool
        n_rows = int((flat >= 0).sum())
        self.stats["dispatches"] += 1
        self.stats["rows"] += n_rows
        self.stats["padded_rows"] += flat.size - n_rows
        return packed if not self.examples else (kind, stage, k, flat, packed)

    def finish(self, pending) -> None:
        """Reads a dispatch's packed output and routes its examples."""
        kind, stage, k, flat, packed = pending
        t0 = time.perf_counter()
        packed = np.asarray(packed)
        self.stats["host_wait_s"] += time.perf_counter() - t0
        lay, eng = self.layout, self.e
        for r in np.flatnonzero(flat >= 0):
            ex, row = int(flat[r]), packed[r]
            d = int(self.dev[ex])
            if kind == "embed":
                self.count[ex] = int(row[lay.count])
                self.queue(1, int(eng.bucket_index(self.count[ex])))[d].append(ex)
                continue
            layer = max(stage, 1)
            self.tokens[ex, layer - 1] = self.count[ex]
            self.state[ex] = row[lay.state]
            if row[lay.stop] > 0.5:
                self.exit[ex] = layer
                self.outputs[ex] = self.answer(row)
                self.free[k][d].append(int(self.slot[ex]))
                self.done += 1
                continue
            if eng.spec.has_cp:
                self.count[ex] = int(row[lay.count])
            nk = int(eng.bucket_index(self.count[ex])) if eng.spec.has_cp else k
            self.queue(layer + 1, nk)[d].append(ex)
        if self.progress is not None:
            self.progress(self.done)

    def answer(self, row) -> np.ndarray:
        lay, spec = self.layout, self.e.spec
        if self.rule.kind != "dact":
            return row[:spec.num_outputs]
        a = row[lay.state][:spec.num_outputs]
        return a if spec.is_regression else np.log(np.maximum(a, LOG_FLOOR))

    def loop(self) -> None:
        """Dispatch k + 1 is queued before dispatch k's output is read."""
        first_kind = "embed" if self.e.spec.has_cp else "first"
        pending = None
        while True:
            choice = self.choose(allow_partial=pending is None)
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
                raise RuntimeError(f"batched engine stalled at stage {stage}, bucket {k}")
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
        cfg, c, L = eng.config, spec.num_outputs, eng.num_layers
        extra = spec.has_lte or spec.has_halting
        fl, full = [], []
        for i in range(len(self.examples)):
            e, n = int(self.exit[i]), int(self.n[i])
            heads = e if spec.has_exits else 1
            fl.append(example_flops(cfg, n, self.tokens[i, :e], c, heads, extra, eng.cp_hidden))
            full.append(example_flops(cfg, n, [n] * L, c, 1, False, None))
        self.stats["host_busy_s"] = seconds - self.stats["host_wait_s"]
        return EngineResults(self.outputs, self.exit, self.tokens, np.array(fl, np.int64),
                             np.array(full, np.int64), self.n, spec.is_regression, seconds,
                             dict(self.stats))
