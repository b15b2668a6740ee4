"""Checkpoint loading/saving: round trips through Hugging Face, prefixed and Flax-layout
checkpoints, and one clear error per kind of bad input."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest
from flax import serialization
from flax.traverse_util import unflatten_dict
from safetensors.numpy import load_file, save_file

from jaxit.batch import batch_from_ids
from jaxit.encoders import (
    CheckpointError,
    EncoderConfig,
    init_params,
    load_pretrained,
    make_encoder,
    params_from_state_dict,
    params_to_state_dict,
    pooled,
    save_pretrained,
)

try:  # only the Hugging Face round trips need torch; the checkpoint-error tests do not
    import torch
    import transformers
except ImportError:
    torch = transformers = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch and transformers "
                                 "(pip install -e '.[torch-ref]')")

TOL = 1e-4
VOCAB = 57

CONFIGS = {
    "bert": EncoderConfig("bert", VOCAB, hidden_size=32, num_layers=2, num_heads=4,
                          intermediate_size=39, max_position_embeddings=40),
    "roberta": EncoderConfig("roberta", VOCAB, hidden_size=32, num_layers=2, num_heads=4,
                             intermediate_size=39, max_position_embeddings=40,
                             type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5),
    "albert": EncoderConfig("albert", VOCAB, hidden_size=32, num_layers=3, num_heads=4,
                            intermediate_size=39, max_position_embeddings=40, embedding_size=16,
                            hidden_act="gelu_new"),
    "distilbert": EncoderConfig("distilbert", VOCAB, hidden_size=32, num_layers=2, num_heads=4,
                                intermediate_size=39, max_position_embeddings=40,
                                type_vocab_size=0),
}


def _random_params(cfg: EncoderConfig, seed: int = 0) -> dict:
    """init_params with every leaf perturbed (LayerNorm 1/0 and zero biases hide mix-ups)."""
    params = init_params(cfg, jax.random.key(seed), with_pooler=cfg.model_type != "distilbert")
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [np.asarray(x + 0.1 * jax.random.normal(k, x.shape)) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, leaves)


def _batch(cfg: EncoderConfig, seq_len: int = 11):
    rng = np.random.default_rng(0)
    pad = cfg.pad_token_id
    ids = rng.integers(3, VOCAB, (2, seq_len)).astype(np.int32)
    mask = np.ones_like(ids)
    ids[1, 7:], mask[1, 7:] = pad, 0
    tt = np.zeros_like(ids)
    if cfg.type_vocab_size > 1:
        tt[:, 4:] = 1
        tt[1, 7:] = 0
    return batch_from_ids(ids, mask, tt)


def _hf_forward(model, cfg: EncoderConfig, batch):
    kw = {"input_ids": torch.tensor(np.asarray(batch.input_ids), dtype=torch.long),
              "attention_mask": torch.tensor(np.asarray(batch.attention_mask), dtype=torch.long),
              "output_hidden_states": True}
    if cfg.model_type != "distilbert":
        kw["token_type_ids"] = torch.tensor(np.asarray(batch.token_type_ids), dtype=torch.long)
    with torch.inference_mode():
        return model(**kw)


def _max_real_diff(a, b, mask) -> float:
    real = np.asarray(mask, bool)
    return float(np.max(np.abs(np.asarray(a)[real] - np.asarray(b)[real])))


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture
def bert_ckpt(tmp_path):
    """A saved random tiny BERT checkpoint directory (fresh per test, free to corrupt)."""
    cfg = CONFIGS["bert"]
    params = _random_params(cfg)
    save_pretrained(tmp_path / "ckpt", cfg, params)
    return tmp_path / "ckpt", cfg, params


# ------------------------------------------------------------------------ round trips


@needs_torch
@pytest.mark.parametrize("mt", sorted(CONFIGS))
def test_save_pretrained_loads_in_hf(mt, tmp_path):
    cfg = CONFIGS[mt]
    params = _random_params(cfg, seed=len(mt))
    save_pretrained(tmp_path, cfg, params)

    model, info = transformers.AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    model.eval()
    assert type(model).__name__ == {"bert": "BertModel", "roberta": "RobertaModel",
                                    "albert": "AlbertModel",
                                    "distilbert": "DistilBertModel"}[mt]
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info

    batch = _batch(cfg)
    ours = jax.jit(make_encoder(cfg).forward_all)(params, batch)
    theirs = _hf_forward(model, cfg, batch)
    assert len(theirs.hidden_states) == cfg.num_layers + 1
    for i in range(cfg.num_layers):
        err = _max_real_diff(ours["hidden"][i], theirs.hidden_states[i + 1], batch.attention_mask)
        assert err <= TOL, f"{mt} layer {i + 1}: {err}"
    if "pooler" in params:
        ours_pool = pooled(params, ours["cls"][-1])
        np.testing.assert_allclose(np.asarray(ours_pool), theirs.pooler_output.numpy(), atol=TOL)

    # and back: our loader reads what we wrote bit for bit
    cfg2, params2 = load_pretrained(tmp_path)
    assert cfg2 == cfg
    _assert_trees_equal(params2, params)


def test_state_dict_round_trip_is_exact():
    for cfg in CONFIGS.values():
        params = _random_params(cfg)
        _assert_trees_equal(params_from_state_dict(cfg, params_to_state_dict(cfg, params)), params)


@needs_torch
def test_bert_prefix_and_head_keys(tmp_path):
    """A BertForSequenceClassification checkpoint: `bert.` prefix plus `classifier.*`."""
    hf_cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=39,
                                     max_position_embeddings=40, num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(hf_cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    keys = load_file(str(tmp_path / "model.safetensors")).keys()
    assert any(k.startswith("bert.") for k in keys) and "classifier.weight" in keys

    cfg, params = load_pretrained(tmp_path)
    assert cfg.num_layers == 2 and "pooler" in params
    # exactly the weights of the inner BertModel
    inner = {k: v.numpy() for k, v in model.bert.state_dict().items()}
    _assert_trees_equal(params, params_from_state_dict(cfg, inner))

    batch = _batch(cfg)
    ours = jax.jit(make_encoder(cfg).forward_all)(params, batch)
    theirs = _hf_forward(model.bert, cfg, batch)
    err = _max_real_diff(ours["hidden"][-1], theirs.last_hidden_state, batch.attention_mask)
    assert err <= TOL


def _flax_layout(state: dict[str, np.ndarray], prefix: str = "") -> dict:
    """Torch-layout BERT state dict -> the nested Flax layout of transformers' old Flax
    classes: kernel [in, out], `embedding`, LayerNorm `scale`/`bias`, `encoder.layer.{i}`."""
    flat = {}
    for k, v in state.items():
        *mods, leaf = k.split(".")
        if leaf == "weight":
            if mods[-1].endswith("_embeddings"):
                leaf = "embedding"
            elif mods[-1] == "LayerNorm":
                leaf = "scale"
            else:
                leaf, v = "kernel", np.ascontiguousarray(v.T)
        path = ([prefix] if prefix else []) + mods + [leaf]
        flat[tuple(path)] = np.asarray(v)
    return unflatten_dict(flat)


@pytest.mark.parametrize("prefix", ["", "bert"])
def test_flax_msgpack(bert_ckpt, tmp_path, prefix):
    ckpt, cfg, _params = bert_ckpt
    state = load_file(str(ckpt / "model.safetensors"))
    tree = _flax_layout(state, prefix)
    layer0 = tree[prefix]["encoder"]["layer"]["0"] if prefix else tree["encoder"]["layer"]["0"]
    assert layer0["attention"]["self"]["query"]["kernel"].shape == (32, 32)
    assert layer0["intermediate"]["dense"]["kernel"].shape == (32, 39)  # [in, out]

    fx = tmp_path / "flax"
    fx.mkdir()
    shutil.copy(ckpt / "config.json", fx / "config.json")
    (fx / "flax_model.msgpack").write_bytes(serialization.msgpack_serialize(tree))
    cfg_fx, params_fx = load_pretrained(fx)
    _, params_st = load_pretrained(ckpt)
    assert cfg_fx == cfg
    _assert_trees_equal(params_fx, params_st)
    batch = _batch(cfg)
    fwd = jax.jit(make_encoder(cfg).forward_all)
    np.testing.assert_array_equal(np.asarray(fwd(params_fx, batch)["hidden"]),
                                  np.asarray(fwd(params_st, batch)["hidden"]))


@needs_torch
def test_pytorch_bin_and_sharded_safetensors(bert_ckpt, tmp_path):
    ckpt, _cfg, params = bert_ckpt
    state = load_file(str(ckpt / "model.safetensors"))
    pt = tmp_path / "pt"
    pt.mkdir()
    shutil.copy(ckpt / "config.json", pt / "config.json")
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, pt / "pytorch_model.bin")
    _assert_trees_equal(load_pretrained(pt)[1], params)

    sh = tmp_path / "sharded"
    sh.mkdir()
    shutil.copy(ckpt / "config.json", sh / "config.json")
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, ks in halves.items():
        save_file({k: state[k] for k in ks}, str(sh / name))
    (sh / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: n for n, ks in halves.items() for k in ks}}))
    _assert_trees_equal(load_pretrained(sh)[1], params)


def test_minilm_round_trip(minilm_dir, tmp_path):
    """The real checkpoint survives load -> save -> load exactly, tokenizer files included."""
    cfg, params = load_pretrained(minilm_dir)
    out = save_pretrained(tmp_path, cfg, params, tokenizer_from=minilm_dir)
    assert (out / "tokenizer.json").is_file() and (out / "vocab.txt").is_file()
    cfg2, params2 = load_pretrained(out)
    assert cfg2 == cfg
    _assert_trees_equal(params2, params)


# ----------------------------------------------------------------------- bad inputs


def _rewrite_state(ckpt, fn):
    state = load_file(str(ckpt / "model.safetensors"))
    state = fn(dict(state))
    save_file(state, str(ckpt / "model.safetensors"))


def test_nonexistent_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "no" / "such" / "dir")
    with pytest.raises(FileNotFoundError, match="not a local directory"):
        load_pretrained("no-such-model-anywhere-xyz")  # not local; hub offline or unknown


def test_file_instead_of_directory(bert_ckpt):
    ckpt, _, _ = bert_ckpt
    with pytest.raises(NotADirectoryError, match="is a file"):
        load_pretrained(ckpt / "model.safetensors")


def test_directory_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(tmp_path)


def test_config_but_no_weights(bert_ckpt):
    ckpt, _, _ = bert_ckpt
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no weights in .*model\.safetensors"):
        load_pretrained(ckpt)


def test_renamed_key(bert_ckpt):
    ckpt, _, _ = bert_ckpt
    old = "encoder.layer.1.attention.self.value.weight"
    new = "encoder.layer.1.attention.self.values.weight"
    _rewrite_state(ckpt, lambda s: {(new if k == old else k): v for k, v in s.items()})
    with pytest.raises(CheckpointError) as e:
        load_pretrained(ckpt)
    msg = str(e.value)
    assert f"missing key(s) ['{old}']" in msg
    assert f"unexpected key(s) ['{new}']" in msg


def test_missing_key(bert_ckpt):
    ckpt, _, _ = bert_ckpt
    gone = "encoder.layer.0.output.LayerNorm.bias"
    _rewrite_state(ckpt, lambda s: {k: v for k, v in s.items() if k != gone})
    with pytest.raises(CheckpointError, match=r"missing key\(s\) \['encoder\.layer\.0\.output"
                                              r"\.LayerNorm\.bias'\]"):
        load_pretrained(ckpt)


def test_missing_half_of_pooler(bert_ckpt):
    ckpt, _, _ = bert_ckpt
    _rewrite_state(ckpt, lambda s: {k: v for k, v in s.items() if k != "pooler.dense.bias"})
    with pytest.raises(CheckpointError, match=r"missing key\(s\) \['pooler\.dense\.bias'\]"):
        load_pretrained(ckpt)


def test_pooler_is_optional(bert_ckpt):
    ckpt, _, _params = bert_ckpt
    _rewrite_state(ckpt, lambda s: {k: v for k, v in s.items() if not k.startswith("pooler.")})
    _, loaded = load_pretrained(ckpt)
    assert "pooler" not in loaded
    with pytest.raises(KeyError, match="no pooler"):
        pooled(loaded, np.zeros((1, 32), np.float32))


def test_missing_word_embeddings(bert_ckpt):
    ckpt, _, _ = bert_ckpt
    _rewrite_state(ckpt, lambda s: {k: v for k, v in s.items()
                                    if k != "embeddings.word_embeddings.weight"})
    with pytest.raises(CheckpointError, match="missing key 'embeddings.word_embeddings.weight'"):
        load_pretrained(ckpt)


def test_unexpected_key(bert_ckpt):
    ckpt, _, _ = bert_ckpt
    _rewrite_state(ckpt, lambda s: {**s, "encoder.layer.2.output.dense.bias":
                                    np.zeros(32, np.float32)})
    with pytest.raises(CheckpointError,
                       match=r"unexpected key\(s\) \['encoder\.layer\.2\.output\.dense\.bias'\]"):
        load_pretrained(ckpt)
    # strict=False ignores it and loads the rest
    _cfg, params = load_pretrained(ckpt, strict=False)
    assert params["layers"]["qkv"]["kernel"].shape == (2, 32, 96)


def test_unexpected_key_outside_prefix(tmp_path, bert_ckpt):
    ckpt, _, _ = bert_ckpt
    _rewrite_state(ckpt, lambda s: {**{"bert." + k: v for k, v in s.items()},
                                    "mystery.weight": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match=r"outside the model prefix 'bert\.'.*mystery"):
        load_pretrained(ckpt)


@pytest.mark.parametrize("key,bad_shape,want", [
    ("encoder.layer.1.attention.self.key.weight", (32, 30), (32, 32)),  # one part of fused qkv
    ("encoder.layer.0.intermediate.dense.weight", (40, 32), (39, 32)),
    ("encoder.layer.0.attention.self.value.bias", (31,), (32,)),
    ("embeddings.word_embeddings.weight", (VOCAB + 1, 32), (VOCAB, 32)),
    ("embeddings.LayerNorm.weight", (16,), (32,)),
])
def test_shape_mismatch(bert_ckpt, key, bad_shape, want):
    ckpt, _, _ = bert_ckpt
    _rewrite_state(ckpt, lambda s: {**s, key: np.zeros(bad_shape, np.float32)})
    with pytest.raises(CheckpointError) as e:
        load_pretrained(ckpt)
    msg = str(e.value)
    assert f"shape mismatch for '{key}': checkpoint has {bad_shape}, the config expects {want}" \
        in msg, msg


def test_config_disagrees_with_weights(bert_ckpt):
    """config.json says 3 layers, the weights hold 2: the message names the missing layer."""
    ckpt, _, _ = bert_ckpt
    d = json.loads((ckpt / "config.json").read_text())
    d["num_hidden_layers"] = 3
    (ckpt / "config.json").write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match=r"3 layers.*missing key\(s\) \['encoder\.layer\.2\."):
        load_pretrained(ckpt)


def test_unknown_model_type(bert_ckpt):
    ckpt, _, _ = bert_ckpt
    d = json.loads((ckpt / "config.json").read_text())
    d["model_type"] = "gpt2"
    (ckpt / "config.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="unknown model_type 'gpt2'"):
        load_pretrained(ckpt)
    del d["model_type"]
    (ckpt / "config.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="no 'model_type'"):
        load_pretrained(ckpt)


def test_config_missing_field(bert_ckpt):
    ckpt, _, _ = bert_ckpt
    d = json.loads((ckpt / "config.json").read_text())
    del d["num_attention_heads"]
    (ckpt / "config.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="missing the field 'num_attention_heads'"):
        load_pretrained(ckpt)


@pytest.mark.parametrize("text", ['{"model_type": "bert", ', "[1, 2]", ""])
def test_malformed_config(bert_ckpt, text):
    ckpt, _, _ = bert_ckpt
    (ckpt / "config.json").write_text(text)
    with pytest.raises(ValueError, match="not valid JSON|must hold a JSON object"):
        load_pretrained(ckpt)


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_corrupt_safetensors(bert_ckpt, how):
    ckpt, _, _ = bert_ckpt
    f = ckpt / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(b"\x00not a safetensors file" * 10 if how == "garbage" else data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable safetensors"):
        load_pretrained(ckpt)


def test_corrupt_flax_msgpack(bert_ckpt):
    ckpt, _, _ = bert_ckpt
    (ckpt / "model.safetensors").unlink()
    (ckpt / "flax_model.msgpack").write_bytes(b"\xc1\xc1 definitely not msgpack")
    with pytest.raises(CheckpointError, match=r"flax_model\.msgpack is not a readable Flax"):
        load_pretrained(ckpt)
