"""Issue #16 items 6-7: a diverging run stops at the step with its last good checkpoint
intact; a run killed (SIGKILL) at random moments, checkpoint saves included, and resumed
each time ends exactly as an uninterrupted run, with each metrics row once."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxit.configs import tiny_config
from jaxit.train import loop
from jaxit.train.checkpoint import Checkpoints
from jaxit.train.writer import read_metrics

pytestmark = pytest.mark.standard_promotion
ROOT = Path(__file__).resolve().parents[1]


def _poison_at(monkeypatch, bad_step: int):
    """Makes update number `bad_step` (1-based) blow up: NaN loss and NaN params."""
    real = loop.make_update_fn

    def make(method, tx, labels):
        update = real(method, tx, labels)

        def poisoned(state, batch):
            new, m = update(state, batch)
            nan = jnp.where(new.step == bad_step, jnp.nan, 0.0).astype(jnp.float32)
            params = jax.tree.map(lambda p: p + nan.astype(p.dtype), new.params)
            return new._replace(params=params), {**m, "loss": m["loss"] + nan}

        return poisoned

    monkeypatch.setattr(loop, "make_update_fn", make)


def _saved_params(workdir: Path, latest_step: int):
    """The params of the latest checkpoint in `workdir`, which must be `latest_step`."""
    import orbax.checkpoint as ocp

    ckpts = Checkpoints(workdir)
    assert ckpts.latest_step() == latest_step
    state = ckpts.latest.restore(latest_step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]
    ckpts.close()
    return state["params"]


def test_nan_stops_at_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    c = tiny_config()
    c.train.num_steps = 8
    c.num_devices = 1
    c.data.max_length, c.data.buckets = 16, (16,)  # one shape: one compile
    c.save_every, c.log_every = 2, 4  # a save (6) comes before the log (8)
    c.eval_every = 100  # no evaluation (and its compiles) before step 8
    _poison_at(monkeypatch, 5)
    with pytest.raises(loop.DivergenceError, match=r"at step 5 \(loss=nan.*checkpoint \(step 4\) "
                                                   r"is the last good one"):
        loop.train(c, tmp_path / "run")
    params = _saved_params(tmp_path / "run", 4)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
    assert max(r["step"] for r in read_metrics(tmp_path / "run")) == 4


# ---- SIGKILL at random moments ----------------------------------------------------------

STEPS = 12
OVERRIDES = [f"--config.train.num_steps={STEPS}", "--config.save_every=2", "--config.eval_every=4",
             "--config.log_every=2", "--config.keep_checkpoints=2"]


def _env(cache):
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", JAXIT_CACHE_DIR=str(cache),
               PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    return env


def _train_cmd(workdir, *extra):
    return [sys.executable, "-m", "jaxit.cli", "train", f"--workdir={workdir}", *extra]


def _saving(workdir: Path) -> bool:
    """An orbax save in progress: a temporary checkpoint directory exists."""
    return any("tmp" in p.name for d in ("checkpoints", "best") if (workdir / d).is_dir()
               for p in (workdir / d).iterdir())




def _make_encoder(path: Path):
    """A tiny pretrained-format encoder directory (config.json + model.safetensors)."""
    from jaxit.data.synthetic import synthetic_tokenizer
    from jaxit.encoders.config import EncoderConfig
    from jaxit.encoders.transformer import init_params
    from jaxit.encoders.weights import save_pretrained

    cfg = EncoderConfig(model_type="bert", vocab_size=synthetic_tokenizer().get_vocab_size(),
                        hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                        max_position_embeddings=32, type_vocab_size=2, pad_token_id=0)
    save_pretrained(path, cfg, jax.device_get(init_params(cfg, jax.random.PRNGKey(0))))


def test_sigkill_at_random_moments_then_resume(tmp_path):
    """The first run names the encoder by a path relative to its working directory; every
    resume runs from another directory with only --workdir (the run's hparams.json)."""
    _make_encoder(tmp_path / "enc")
    cache = tmp_path / "xla"
    config = [f"--config={ROOT}/experiments/configs/finetune.py:tiny", *OVERRIDES]
    full = tmp_path / "full"
    subprocess.run(_train_cmd(full, *config, f"--config.model={tmp_path / 'enc'}"), cwd=ROOT,
                   env=_env(cache), check=True, capture_output=True, timeout=300)

    run = tmp_path / "killed"
    rng = random.Random(16)
    first = _train_cmd(run, *config, "--config.model=enc")
    plan = ["save", "rows", "save", None]  # None: let it finish
    kills = []
    for attempt, when in enumerate(plan):
        cmd = first if attempt == 0 else _train_cmd(run)
        proc = subprocess.Popen(cmd, cwd=tmp_path if attempt == 0 else ROOT, env=_env(cache),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        rows0 = len(read_metrics(run))
        start, hit = time.monotonic(), False
        while when and proc.poll() is None and time.monotonic() - start < 120:
            if when == "save" and _saving(run):  # inside an orbax save
                hit = True
            elif when == "rows" and len(read_metrics(run)) > rows0:  # a while after a row
                time.sleep(rng.uniform(0.0, 0.3))
                hit = True
            if hit:
                break
            time.sleep(0.001)
        if hit and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills.append(when)
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err.decode()[-3000:]
    assert proc.returncode == 0 and kills.count("save") >= 2 and "rows" in kills, kills

    hp = json.loads((run / "hparams.json").read_text())
    assert hp["model"] == str((tmp_path / "enc").resolve())
    for a, b in zip(jax.tree.leaves(_saved_params(full, STEPS)),
                    jax.tree.leaves(_saved_params(run, STEPS))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    res_full = json.loads((full / "result.json").read_text())
    res_run = json.loads((run / "result.json").read_text())
    assert res_run["dev"] == res_full["dev"] and res_run["best_step"] == res_full["best_step"]

    def rows(wd):
        return [{k: v for k, v in r.items() if k != "train/examples_per_s"}
                for r in read_metrics(wd)]

    keys = [(r["step"], tuple(sorted(r))) for r in rows(run)]
    assert len(keys) == len(set(keys)), "a step was logged twice"
    assert rows(run) == rows(full)
