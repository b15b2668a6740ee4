"""AdapLeR's three phases on the tiny synthetic task: fine-tune -> saliencies (gradient x
input, averaged over the best checkpoints, stored per split, resumable) -> length-reduction
training from the fine-tuned run (resumable, same result as uninterrupted); bad inputs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxit.batch import batch_from_ids
from jaxit.configs import tiny_config
from jaxit.interpret import saliency as S

pytestmark = pytest.mark.standard_promotion


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    from jaxit.train.loop import train

    root = tmp_path_factory.mktemp("adapler")
    c = tiny_config()
    c.train.num_steps = 6
    c.eval_every = 2
    c.save_every = 100
    c.keep_checkpoints = 1
    c.keep_best = 3
    train(c, root / "ft")
    return root


def _adapler_config(root, **kw):
    c = tiny_config()
    c.method.name = "adapler"
    c.method.saliency_dir = str(root / "sal")
    c.init_from = str(root / "ft")
    c.train.num_steps = 4
    c.train.learning_rate = 1e-3
    c.eval_every = 0  # once, at the end
    c.save_every = 100
    c.method.lambda_base = 10.0
    for k, v in kw.items():
        c.method[k] = v
    return c


def test_three_phases(finetuned):
    from jaxit.train.init_from import load_run_params
    from jaxit.train.loop import train
    from jaxit.train.pipeline import build_setup

    root = finetuned
    scores = S.checkpoint_scores(root / "ft")
    assert sorted(scores) == [2, 4, 6] and all(np.isfinite(v) for v in scores.values())
    # phase 2: the 3 best checkpoints (keep_best = 3), stored per split, resumable
    summary = S.extract_saliencies(root / "ft", root / "sal", ("train", "dev"), top_k=3,
                                   batch_size=32, progress=False)
    assert summary["steps"] == [2, 4, 6]
    mtimes = {p: p.stat().st_mtime_ns for p in (root / "sal").glob("ckpt_*/*.npz")}
    assert len(mtimes) == 6
    S.extract_saliencies(root / "ft", root / "sal", ("train",), top_k=3, progress=False)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing recomputed
    guids, avg, meta = S.load_saliency(root / "sal" / "train.npz")
    assert len(guids) == 256 and meta["steps"] == [2, 4, 6] and not meta["normalised"]
    per = [S.load_saliency(root / "sal" / f"ckpt_{s}" / "train.npz")[1] for s in (2, 4, 6)]
    np.testing.assert_allclose(avg[7], (per[0][7] + per[1][7] + per[2][7]) / 3, rtol=1e-6)
    assert all(np.all(a >= 0) for a in avg) and any(np.any(a > 0) for a in avg)

    # the saliency of one example does not depend on its batch-mates or on padding
    from jaxit.encoders.transformer import make_encoder

    setup = build_setup(tiny_config())
    enc = make_encoder(setup.method.encoder.config)
    params = jax.device_put(S.restore_step_params(root / "ft", 4))
    ds = setup.train_data
    i = ds.guids.index(guids[7])
    alone = S.embedding_saliency(enc, params, batch_from_ids(
        ds.input_ids[i][None], labels=ds.labels[i:i + 1].astype(np.int32)))
    np.testing.assert_allclose(np.asarray(alone[0]), per[1][7], rtol=2e-4, atol=1e-7)

    # phase 3 from the fine-tuned run, interrupted and resumed = uninterrupted
    c = _adapler_config(root)
    setup = build_setup(c)
    assert setup.train_data.token_targets is not None
    full, full_state = train(c, root / "adapler_full", setup=setup)
    part, _ = train(c, root / "adapler_resumed", max_steps_this_run=2, setup=setup)
    assert part["step"] == 2
    resumed, resumed_state = train(c, root / "adapler_resumed", setup=setup)
    for a, b in zip(jax.tree.leaves(full_state), jax.tree.leaves(resumed_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert resumed["dev"] == full["dev"]
    # started from the fine-tuned encoder and head; η moved and stayed in [0.01, 1]
    src = load_run_params(root / "ft")
    assert not np.array_equal(full_state.params["encoder"]["pooler"]["kernel"],
                              src["encoder"]["pooler"]["kernel"])
    eta = np.asarray(full_state.params["heads"]["eta"])
    assert np.all((eta >= 0.01) & (eta <= 1.0)) and not np.allclose(eta, 0.25)
    rows = [json.loads(x) for x in (root / "adapler_full" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/loss_cp" in r]
    assert train_rows and all(np.isfinite(r["train/loss_length"]) for r in train_rows)


def test_saliency_input_errors(finetuned, tmp_path):
    from jaxit.train.pipeline import build_setup

    root = finetuned
    with pytest.raises(FileNotFoundError, match="phase 2"):
        build_setup(_adapler_config(root, saliency_dir=str(tmp_path / "none")))
    with pytest.raises(ValueError, match="saliency_dir is not set"):
        build_setup(_adapler_config(root, saliency_dir=""))
    guids, values, meta = S.load_saliency(root / "sal" / "train.npz")
    S.save_saliency(tmp_path / "short" / "train.npz", guids[:-5], values[:-5], meta)
    with pytest.raises(ValueError, match="5 of the 256 train examples have none"):
        build_setup(_adapler_config(root, saliency_dir=str(tmp_path / "short")))
    S.save_saliency(tmp_path / "long" / "train.npz", guids,
                    [np.concatenate([v, [0.0]]) for v in values], meta)
    with pytest.raises(ValueError, match="saliency length different"):
        build_setup(_adapler_config(root, saliency_dir=str(tmp_path / "long")))
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        S.checkpoint_scores(tmp_path)


def test_select_checkpoints():
    scores = {100: 0.8, 200: 0.9, 300: float("nan"), 400: 0.9, 500: 0.85}
    assert S.select_checkpoints(scores, 3) == [200, 400, 500]
    assert S.select_checkpoints(scores, 10) == [100, 200, 300, 400, 500]
    assert S.select_checkpoints({7: float("nan")}, 3) == [7]


def test_saliency_picks_the_gold_class():
    from jaxit.encoders import EncoderConfig, init_params, make_encoder
    from jaxit.heads import init_exit_head

    cfg = EncoderConfig("bert", 50, 16, 2, 2, 32, max_position_embeddings=16)
    enc = make_encoder(cfg)
    params = {"encoder": init_params(cfg, jax.random.PRNGKey(0)),
              "heads": {"final": init_exit_head(jax.random.PRNGKey(1), 16, 3)}}
    ids = np.array([[1, 7, 8, 9, 2, 0], [1, 7, 8, 9, 2, 0]], np.int32)
    b = batch_from_ids(ids, (ids > 0).astype(np.int32), labels=np.array([0, 2], np.int32))
    s = np.asarray(jax.jit(lambda p, b: S.embedding_saliency(enc, p, b))(params, b))
    assert np.all(s[:, 5] == 0) and np.all(s[:, :5] > 0)
    assert not np.allclose(s[0], s[1])  # same tokens, different gold class

    h0 = enc.embed(params["encoder"], b)
    g = jax.jit(jax.grad(
        lambda h: S.forward_from_embeddings(enc, params, h, b.attention_mask)[1, 2]))(h0)
    expect = np.linalg.norm(np.asarray(g * h0)[1], axis=-1) * (ids[1] > 0)
    np.testing.assert_allclose(s[1], expect, rtol=1e-5)
    with pytest.raises(ValueError, match="labels"):
        S.embedding_saliency(enc, params, b._replace(labels=None))
    assert jnp.all(jnp.isfinite(s))


def test_token_targets_ride_in_the_dataset_and_batches():
    from jaxit.data.batching import pad_batch
    from jaxit.data.tokenize import EncodedDataset

    ids = [np.array([1, 5, 2], np.int32), np.array([1, 6, 7, 8, 2], np.int32)]
    ds = EncodedDataset(ids, [np.zeros_like(x) for x in ids], np.array([0, 1], np.int32),
                        ["a", "b"], 8)
    assert pad_batch(ds, np.array([0, 1]), (8,)).token_targets is None
    ds = ds.with_token_targets([np.array([1.0, 2, 3]), np.array([4.0, 5, 6, 7, 8])])
    b = pad_batch(ds, np.array([1, 0]), (8,))
    np.testing.assert_array_equal(b.token_targets, [[4, 5, 6, 7, 8, 0, 0, 0],
                                                    [1, 2, 3, 0, 0, 0, 0, 0]])
    assert ds.select([1]).token_targets[0].tolist() == [4, 5, 6, 7, 8]
    with pytest.raises(ValueError, match="do not match their token counts"):
        ds.with_token_targets([np.ones(3), np.ones(4)])
