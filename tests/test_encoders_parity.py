"""Parity of jaxit's functional encoders with Hugging Face PyTorch, plus the structural
contracts of `forward_all` / `block` / dropout.

Tiny random HF models (BERT, RoBERTa, ALBERT, DistilBERT) are saved with HF
`save_pretrained` and loaded with jaxit's `load_pretrained`; every layer's hidden states
must agree within 1e-4 (fp32) on the real (non-pad) positions of a padded batch.
"""

from __future__ import annotations

import csv

import chex
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxit.batch import batch_from_ids
from jaxit.encoders import load_pretrained, load_tokenizer, make_encoder, mask_bias_from

TOL = 1e-4
VOCAB = 99


# ----------------------------------------------------------------------------- helpers


def _hf_model(model_type: str):
    """A tiny randomly initialised HF model with awkward sizes (odd FFN widths, ALBERT
    embedding_size != hidden_size, RoBERTa pad id 1)."""
    t = transformers
    if model_type == "bert":
        cfg = t.BertConfig(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=3,
                           num_attention_heads=4, intermediate_size=37,
                           max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu")
        model = t.BertModel(cfg)
    elif model_type == "roberta":
        cfg = t.RobertaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=45,
                              max_position_embeddings=40, type_vocab_size=1, pad_token_id=1,
                              bos_token_id=0, eos_token_id=2, hidden_act="gelu")
        model = t.RobertaModel(cfg)
    elif model_type == "albert":
        cfg = t.AlbertConfig(vocab_size=VOCAB, embedding_size=24, hidden_size=48,
                             num_hidden_layers=3, num_attention_heads=6, intermediate_size=53,
                             max_position_embeddings=64, type_vocab_size=2,
                             hidden_act="gelu_new", pad_token_id=0, hidden_dropout_prob=0.1,
                             attention_probs_dropout_prob=0.1)  # HF's ALBERT default is 0
        model = t.AlbertModel(cfg)
    elif model_type == "distilbert":
        cfg = t.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=41,
                                 max_position_embeddings=64, activation="gelu", pad_token_id=0)
        model = t.DistilBertModel(cfg)
    else:
        raise AssertionError(model_type)
    _randomise(model, seed=sum(map(ord, model_type)))
    return model.eval()


def _randomise(model, seed: int):
    """Non-trivial values everywhere (HF inits LayerNorm to 1/0 and biases to 0, which would
    hide transposition or scale/bias mix-ups)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim == 1:  # biases and LayerNorm params
                p.copy_(0.1 * noise + (1.0 if _is_scale(p, model) else 0.0))
            else:
                p.copy_(0.15 * noise)


def _is_scale(p, model) -> bool:
    for name, q in model.named_parameters():
        if q is p:
            low = name.lower()
            return ("layernorm" in low or "layer_norm" in low) and name.endswith("weight")
    return False


def _padded_batch(model_type: str, seq_len: int, seed: int = 0):
    """B=3 with lengths (seq_len, seq_len - 4, 5): padding in two rows; token types for the
    models that have them."""
    rng = np.random.default_rng(seed + seq_len)
    pad = 1 if model_type == "roberta" else 0
    lengths = [seq_len, seq_len - 4, 5]
    ids = np.full((3, seq_len), pad, np.int32)
    mask = np.zeros((3, seq_len), np.int32)
    tt = np.zeros((3, seq_len), np.int32)
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(3, VOCAB, n)
        mask[b, :n] = 1
        if model_type in ("bert", "albert"):
            tt[b, n // 2:n] = 1
    return batch_from_ids(ids, mask, tt)


def _hf_hidden(model, model_type: str, batch) -> list[np.ndarray]:
    kwargs = {"input_ids": torch.tensor(np.asarray(batch.input_ids), dtype=torch.long),
                  "attention_mask": torch.tensor(np.asarray(batch.attention_mask), dtype=torch.long),
                  "output_hidden_states": True}
    if model_type in ("bert", "albert", "roberta"):
        kwargs["token_type_ids"] = torch.tensor(np.asarray(batch.token_type_ids),
                                                dtype=torch.long)
    with torch.inference_mode():
        out = model(**kwargs)
    return [h.numpy() for h in out.hidden_states]


def _assert_close_on_real(ours, theirs, mask, what: str):
    real = np.asarray(mask, bool)
    ours, theirs = np.asarray(ours)[real], np.asarray(theirs)[real]
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    err = float(np.max(np.abs(ours - theirs)))
    assert err <= TOL, f"{what}: max abs diff {err:.3g} > {TOL}"
    return err


@pytest.fixture(scope="module", params=["bert", "roberta", "albert", "distilbert"])
def tiny(request, tmp_path_factory):
    """(model_type, HF model, jaxit cfg, jaxit params) for one tiny random checkpoint."""
    mt = request.param
    model = _hf_model(mt)
    d = tmp_path_factory.mktemp(f"tiny-{mt}")
    model.save_pretrained(d)
    cfg, params = load_pretrained(d)
    assert cfg.model_type == mt
    return mt, model, cfg, params


# ------------------------------------------------------------------- HF parity (tiny)


@pytest.mark.parametrize("seq_len", [13, 29])
def test_tiny_parity_every_layer(tiny, seq_len):
    mt, model, cfg, params = tiny
    batch = _padded_batch(mt, seq_len)
    enc = make_encoder(cfg)
    out = jax.jit(enc.forward_all)(params, batch)
    theirs = _hf_hidden(model, mt, batch)
    assert len(theirs) == cfg.num_layers + 1
    assert out["hidden"].shape == (cfg.num_layers, 3, seq_len, cfg.hidden_size)
    assert out["cls"].shape == (cfg.num_layers, 3, cfg.hidden_size)
    _assert_close_on_real(out["embeddings"], theirs[0], batch.attention_mask, f"{mt} embeddings")
    for layer in range(cfg.num_layers):
        _assert_close_on_real(out["hidden"][layer], theirs[layer + 1], batch.attention_mask,
                              f"{mt} layer {layer + 1} (T={seq_len})")
    np.testing.assert_array_equal(np.asarray(out["cls"]), np.asarray(out["hidden"][:, :, 0]))


def test_tiny_parity_is_not_vacuous(tiny):
    """The tolerance is meaningful: hidden states vary well beyond 1e-4 across positions and
    a perturbed parameter breaks parity."""
    mt, _model, cfg, params = tiny
    batch = _padded_batch(mt, 13)
    enc = make_encoder(cfg)
    out = np.asarray(jax.jit(enc.forward_all)(params, batch)["hidden"][-1])
    assert np.std(out[0]) > 0.1
    bad = jax.tree.map(lambda x: x, params)
    bad["layers"]["ffn_in"]["bias"] = params["layers"]["ffn_in"]["bias"] + np.float32(0.01)
    out_bad = np.asarray(jax.jit(enc.forward_all)(bad, batch)["hidden"][-1])
    assert np.max(np.abs(out_bad - out)) > 10 * TOL


def test_roberta_positions_start_after_pad():
    """RoBERTa numbers real tokens from pad_token_id + 1 and gives pads position pad_token_id,
    so left padding gives the same real-token states as no padding."""
    model = _hf_model("roberta")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        cfg, params = load_pretrained(d)
    assert cfg.pad_token_id == 1 and cfg.position_offset == 2
    rng = np.random.default_rng(3)
    real = rng.integers(3, VOCAB, 9).astype(np.int32)
    left = np.concatenate([np.ones(4, np.int32), real])[None]
    mask = (left != 1).astype(np.int32)
    enc = make_encoder(cfg)
    out_left = enc.forward_all(params, batch_from_ids(left, mask))["hidden"][-1][0, 4:]
    out_plain = enc.forward_all(params, batch_from_ids(real[None]))["hidden"][-1][0]
    np.testing.assert_allclose(np.asarray(out_left), np.asarray(out_plain), atol=TOL)


# --------------------------------------------------------------- structural contracts


@pytest.mark.parametrize("mt", ["bert", "albert"])
def test_forward_all_equals_block_loop_traced_once(mt, request):
    model = _hf_model(mt)
    d = request.getfixturevalue("tmp_path")
    model.save_pretrained(d)
    cfg, params = load_pretrained(d)
    enc = make_encoder(cfg)
    batch = _padded_batch(mt, 13)
    mask_bias = mask_bias_from(np.asarray(batch.attention_mask))

    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def one_block(lp, h, mb):
        return enc.block(lp, h, mb)

    h = jax.jit(enc.embed)(params, batch)
    loop = []
    for i in range(cfg.num_layers):
        h = one_block(enc.layer_params(params, i), h, mask_bias)
        loop.append(h)
    loop = np.stack([np.asarray(x) for x in loop])

    full = jax.jit(enc.forward_all)(params, batch)
    np.testing.assert_allclose(np.asarray(full["hidden"]), loop, atol=1e-5, rtol=1e-5)
    # real positions must also match HF, so the loop is the real model and not a copy of a bug
    theirs = _hf_hidden(model, mt, batch)
    _assert_close_on_real(loop[-1], theirs[-1], batch.attention_mask, f"{mt} block loop")


def test_block_returns_attention_probabilities(tiny):
    mt, _, cfg, params = tiny
    enc = make_encoder(cfg)
    batch = _padded_batch(mt, 13)
    mb = mask_bias_from(np.asarray(batch.attention_mask))
    h = enc.embed(params, batch)
    out, probs = enc.block(enc.layer_params(params, 0), h, mb, return_attention=True)
    np.testing.assert_allclose(np.asarray(out), np.asarray(enc.block(enc.layer_params(params, 0),
                                                                     h, mb)), atol=1e-6)
    probs = np.asarray(probs)
    assert probs.shape == (3, cfg.num_heads, 13, 13)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    pad = ~np.asarray(batch.attention_mask, bool)  # [B, T]
    assert np.all(probs[np.broadcast_to(pad[:, None, None, :], probs.shape)] < 1e-6)


def test_dropout_rng(tiny):
    mt, _, cfg, params = tiny
    assert cfg.hidden_dropout > 0 and cfg.attention_dropout > 0
    enc = make_encoder(cfg)
    batch = _padded_batch(mt, 13)
    fwd = jax.jit(enc.forward_all)
    det = np.asarray(fwd(params, batch)["hidden"])
    np.testing.assert_array_equal(det, np.asarray(fwd(params, batch)["hidden"]))
    a = np.asarray(fwd(params, batch, jax.random.key(1))["hidden"])
    a2 = np.asarray(fwd(params, batch, jax.random.key(1))["hidden"])
    b = np.asarray(fwd(params, batch, jax.random.key(2))["hidden"])
    np.testing.assert_array_equal(a, a2)
    assert np.max(np.abs(a - det)) > 1e-3
    assert np.max(np.abs(a - b)) > 1e-3
    # the block on its own honours its key too
    mb = mask_bias_from(np.asarray(batch.attention_mask))
    h = enc.embed(params, batch)
    lp = enc.layer_params(params, 0)
    k = jax.random.key(7)
    np.testing.assert_array_equal(np.asarray(enc.block(lp, h, mb, k)),
                                  np.asarray(enc.block(lp, h, mb, k)))
    assert np.max(np.abs(np.asarray(enc.block(lp, h, mb, k)) - np.asarray(enc.block(lp, h, mb)))) > 1e-3


# --------------------------------------------------------- real checkpoint + tokenizer


def _sst2_sentences(data_dir, n: int) -> list[str]:
    with open(data_dir / "SST-2" / "dev.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["sentence", "label"]
    return [r[0] for r in rows[1:n + 1]]


def _pad(encodings, pad_id: int = 0):
    t = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), t), pad_id, np.int32)
    tt = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for i, e in enumerate(encodings):
        n = len(e.ids)
        ids[i, :n], tt[i, :n], mask[i, :n] = e.ids, e.type_ids, 1
    return batch_from_ids(ids, mask, tt)


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    cfg, params = load_pretrained(minilm_dir)
    return cfg, params


def test_minilm_parity_real_sentences(minilm, minilm_dir, data_dir):
    cfg, params = minilm
    tok = load_tokenizer(minilm_dir)
    sents = _sst2_sentences(data_dir, 16)
    batch = _pad(tok.encode_batch(sents))
    assert np.asarray(batch.attention_mask).min() == 0  # the batch really is padded
    out = jax.jit(make_encoder(cfg).forward_all)(params, batch)
    model = transformers.BertModel.from_pretrained(minilm_dir).eval()
    theirs = _hf_hidden(model, "bert", batch)
    assert len(theirs) == 7
    _assert_close_on_real(out["embeddings"], theirs[0], batch.attention_mask, "minilm emb")
    for layer in range(cfg.num_layers):
        _assert_close_on_real(out["hidden"][layer], theirs[layer + 1], batch.attention_mask,
                              f"minilm layer {layer + 1}")


def test_tokenizer_matches_hf(minilm_dir, data_dir):
    ours = load_tokenizer(minilm_dir)
    hf = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    sents = _sst2_sentences(data_dir, 200)
    enc = ours.encode_batch(sents)
    ref = hf(sents)
    assert [e.ids for e in enc] == ref["input_ids"]
    assert [e.type_ids for e in enc] == ref["token_type_ids"]
    assert all(e.ids[0] == hf.cls_token_id and e.ids[-1] == hf.sep_token_id for e in enc)
    # no truncation or padding left on from tokenizer.json
    long = " ".join(sents[:60])
    assert ours.encode(long).ids == hf(long)["input_ids"] and len(ours.encode(long).ids) > 512
    pairs = list(zip(sents[0:40:2], sents[1:40:2]))
    enc_p = ours.encode_batch(pairs)
    ref_p = hf([a for a, _ in pairs], [b for _, b in pairs])
    assert [e.ids for e in enc_p] == ref_p["input_ids"]
    assert [e.type_ids for e in enc_p] == ref_p["token_type_ids"]
    assert all(1 in e.type_ids for e in enc_p)


@pytest.mark.parametrize("name,torch_fn", [
    ("gelu", lambda x: torch.nn.functional.gelu(x)),
    ("gelu_new", lambda x: torch.nn.functional.gelu(x, approximate="tanh")),
    ("relu", torch.relu),
])
def test_activations_match_torch(name, torch_fn):
    from jaxit.encoders.transformer import _activation

    x = np.linspace(-12.0, 12.0, 20001, dtype=np.float32)
    ours = np.asarray(jax.jit(_activation(name))(x))
    np.testing.assert_allclose(ours, torch_fn(torch.from_numpy(x.copy())).numpy(),
                               atol=2e-6, rtol=1e-6)
