"""`load_adapler_run` restores the encoder a run was trained with: its truncated depth
(`truncate_layers`) for a pretrained model directory, and the run's own random encoder
(`model="random"`), not the depth and width of the model directory's config.json (or of the
default MiniLM). Tiny runs trained with the library's own `train`."""

import jax
import numpy as np
import pytest

from jaxit.configs import tiny_config
from jaxit.inference.adapler_runs import load_adapler_run
from jaxit.train.init_from import load_run_params

pytestmark = pytest.mark.standard_promotion

FULL_DEPTH = 4  # the tiny "pretrained" checkpoint's depth
KEEP = 2  # truncate_layers


def _train(c, workdir):
    from jaxit.train.loop import train

    c.train.num_steps = 2
    c.eval_every = 2
    c.data.buckets = (32,)  # one shape: one compilation
    c.save_every = 100
    c.keep_checkpoints = 1
    c.keep_best = 1
    train(c, workdir)
    return workdir


def _assert_same_params(loaded, saved):
    flat_l = dict(jax.tree_util.tree_flatten_with_path(loaded)[0])
    flat_s = dict(jax.tree_util.tree_flatten_with_path(saved)[0])
    assert flat_l.keys() == flat_s.keys()
    for k, v in flat_s.items():
        np.testing.assert_array_equal(np.asarray(flat_l[k]), np.asarray(v), err_msg=str(k))


def _check_loaded(workdir, depth, hidden):
    encoder, params, _ = load_adapler_run(workdir, "best", random_cps=0.02)
    cfg = encoder.config
    assert cfg.num_layers == depth
    assert cfg.hidden_size == hidden
    saved = jax.tree.map(np.asarray, load_run_params(workdir, "best"))
    # the encoder and the trained heads are the checkpoint's, unchanged
    _assert_same_params(params["encoder"], saved["encoder"])
    for name, head in saved["heads"].items():
        _assert_same_params(params["heads"][name], head)
    assert np.shape(params["encoder"]["layers"]["qkv"]["kernel"])[0] == depth
    assert cfg.vocab_size == np.shape(params["encoder"]["embeddings"]["word"])[0]
    # the random CPs are sized for the run's depth and width
    assert params["heads"]["eta"].shape == (depth,)
    assert params["heads"]["theta"].shape == (depth,)
    # and the encoder runs on the params: one hidden state per layer
    ids = np.array([[2, 5, 6, 7, 3]], np.int32)
    from jaxit.batch import batch_from_ids

    hidden_states = encoder.forward_all(params["encoder"], batch_from_ids(ids))["hidden"]
    assert hidden_states.shape == (depth, 1, 5, hidden)
    return encoder, params


@pytest.fixture(scope="module")
def tiny_pretrained(tmp_path_factory):
    """A 4-layer random BERT saved as a Hugging Face checkpoint directory, sized for the
    synthetic tokenizer (a stand-in for a pretrained model directory)."""
    from jaxit.data.synthetic import synthetic_tokenizer
    from jaxit.encoders import EncoderConfig, init_params, save_pretrained

    vocab = synthetic_tokenizer().get_vocab_size()
    cfg = EncoderConfig("bert", vocab, 32, FULL_DEPTH, 2, 64, max_position_embeddings=64)
    out = tmp_path_factory.mktemp("pretrained") / "enc"
    save_pretrained(out, cfg, jax.device_get(init_params(cfg, jax.random.PRNGKey(0))))
    return out


@pytest.fixture(scope="module")
def truncated_run(tiny_pretrained, tmp_path_factory):
    c = tiny_config()
    c.model = str(tiny_pretrained)
    c.tokenizer = "synthetic"
    c.truncate_layers = KEEP
    return _train(c, tmp_path_factory.mktemp("truncated") / "run")


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    c = tiny_config()  # model = "random" (the default MiniLM would be 6 layers, width 384)
    assert c.model == "random"
    c.random_encoder.num_layers = 3
    return _train(c, tmp_path_factory.mktemp("random") / "run")


def test_truncated_run_loads_its_depth(tiny_pretrained, truncated_run):
    encoder, _, model_dir = load_adapler_run(truncated_run, "best", random_cps=0.02)
    assert model_dir is None  # the run's tokenizer is the synthetic one, not the model's
    assert encoder.config.num_layers == KEEP != FULL_DEPTH
    _check_loaded(truncated_run, KEEP, 32)
    # a step number names the same (only) checkpoint
    enc2, params2, _ = load_adapler_run(truncated_run, 2, random_cps=0.02)
    assert enc2.config.num_layers == KEEP
    assert np.shape(params2["encoder"]["layers"]["qkv"]["kernel"])[0] == KEEP


def test_truncated_run_through_load_trained_run(truncated_run):
    """`jaxit predict`'s loader rebuilds the truncated config from the run's hparams too."""
    from jaxit.inference.trained_run import load_trained_run

    run = load_trained_run(truncated_run)
    assert run.num_layers == KEEP
    assert np.shape(run.params["encoder"]["layers"]["qkv"]["kernel"])[0] == KEEP


def test_random_encoder_run_loads_its_own_config(random_run):
    encoder, _ = _check_loaded(random_run, 3, 32)
    assert encoder.config.num_heads == 2 and encoder.config.intermediate_size == 64
    # its tokenizer is the synthetic one, not MiniLM's: no tokenizer directory to read text
    assert load_adapler_run(random_run, "best", random_cps=0.02)[2] is None
    from jaxit.interpret.lr_eval import run_lr_eval

    with pytest.raises(ValueError, match="synthetic tokenizer"):
        run_lr_eval(random_run, ["hatexplain"], random_cps=0.02)


def test_run_without_cps_needs_random_cps(random_run):
    with pytest.raises(ValueError, match="random_cps"):
        load_adapler_run(random_run)
