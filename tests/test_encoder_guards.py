"""Guards against architectures jaxit does not implement (jaxit/encoders/config.py): each
unsupported setting in a config.json is a clear error naming it, never a silently different
model; and RoBERTa's position bound holds under jit too (positions past the table's end are
an error, not NaN or clamped embeddings)."""

import json

import jax
import numpy as np
import pytest

from jaxit.batch import batch_from_ids
from jaxit.encoders import (
    EncoderConfig,
    config_from_hf_dict,
    init_params,
    load_config,
    make_encoder,
)

BERT = {"model_type": "bert", "vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 20}
ALBERT = {**BERT, "model_type": "albert", "embedding_size": 8}
ROBERTA = {**BERT, "model_type": "roberta", "pad_token_id": 1}
DISTILBERT = {"model_type": "distilbert", "vocab_size": 50, "dim": 16, "n_layers": 2,
              "n_heads": 2, "hidden_dim": 32}


@pytest.mark.parametrize("base", [BERT, ALBERT, ROBERTA, DISTILBERT],
                         ids=lambda d: d["model_type"])
def test_supported_configs_parse(base):
    cfg = config_from_hf_dict(dict(base))
    assert cfg.model_type == base["model_type"] and cfg.num_layers == 2
    assert cfg.hidden_size == 16 and cfg.num_heads == 2


GUARDS = [  # (base config, changes, what the error must name)
    (BERT, {"position_embedding_type": "relative_key"}, "relative_key"),
    (BERT, {"position_embedding_type": "relative_key_query"}, "relative_key_query"),
    (ROBERTA, {"position_embedding_type": "relative_key"}, "position_embedding_type"),
    (ALBERT, {"position_embedding_type": "relative_key"}, "position_embedding_type"),
    (ALBERT, {"num_hidden_groups": 2}, "num_hidden_groups"),
    (ALBERT, {"inner_group_num": 2}, "inner_group_num"),
    (DISTILBERT, {"sinusoidal_pos_embds": True}, "sinusoidal_pos_embds"),
    (BERT, {"model_type": "deberta-v2"}, "deberta-v2"),
    (BERT, {"model_type": "gpt2"}, "unknown model_type 'gpt2'"),
    (BERT, {"num_attention_heads": 3}, "not divisible by num_heads 3"),
]


@pytest.mark.parametrize(("base", "changes", "named"), GUARDS,
                         ids=[f"{b['model_type']}-{next(iter(c))}={next(iter(c.values()))}"
                              for b, c, _ in GUARDS])
def test_unsupported_setting_is_a_clear_error(base, changes, named):
    with pytest.raises(ValueError, match="not supported|unknown|not divisible") as e:
        config_from_hf_dict({**base, **changes})
    assert named in str(e.value)


def test_supported_values_of_guarded_settings_pass():
    assert config_from_hf_dict({**BERT, "position_embedding_type": "absolute"})
    assert config_from_hf_dict({**ALBERT, "num_hidden_groups": 1, "inner_group_num": 1})
    assert config_from_hf_dict({**DISTILBERT, "sinusoidal_pos_embds": False})


@pytest.mark.parametrize(("base", "field"), [
    (BERT, "num_hidden_layers"), (BERT, "vocab_size"), (ROBERTA, "hidden_size"),
    (ALBERT, "intermediate_size"), (DISTILBERT, "n_heads"), (DISTILBERT, "dim")])
def test_missing_field_is_named(base, field):
    d = {k: v for k, v in base.items() if k != field}
    with pytest.raises(ValueError, match=f"missing the field '{field}'"):
        config_from_hf_dict(d)


def test_malformed_configs():
    with pytest.raises(ValueError, match="no 'model_type'"):
        config_from_hf_dict({k: v for k, v in BERT.items() if k != "model_type"})
    with pytest.raises(ValueError, match="JSON object, got list"):
        config_from_hf_dict([BERT])
    with pytest.raises(ValueError, match="unknown model_type 't5'"):
        EncoderConfig("t5", 50, 16, 2, 2, 32)


def test_guards_apply_to_a_real_checkpoint_config(minilm_dir, tmp_path):
    """MiniLM's own config.json loads; the same file with an unsupported setting does not
    (the checkpoint is read in place, only config.json is rewritten in tmp_path)."""
    d = json.loads((minilm_dir / "config.json").read_text())
    assert load_config(minilm_dir).num_layers == 6
    (tmp_path / "config.json").write_text(
        json.dumps({**d, "position_embedding_type": "relative_key"}))
    with pytest.raises(ValueError, match="relative_key"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_config(tmp_path / "missing")


# --------------------------------------------------------------- position bounds under jit

P = 12  # max_position_embeddings


def _encoder(model_type):
    cfg = EncoderConfig(model_type, 50, 16, 1, 2, 32, max_position_embeddings=P,
                        pad_token_id=1 if model_type == "roberta" else 0)
    return make_encoder(cfg), init_params(cfg, jax.random.PRNGKey(0))


def _batch(n_real, n_pad=0, pad=1):
    ids = np.concatenate([np.full(n_real, 5, np.int32), np.full(n_pad, pad, np.int32)])[None]
    return batch_from_ids(ids, (ids != pad).astype(np.int32))


def test_roberta_longest_sequence_runs_under_jit_and_eagerly():
    enc, params = _encoder("roberta")
    longest = P - enc.config.position_offset  # positions 2 .. P - 1
    assert longest == P - 2
    batch = _batch(longest)
    fwd = jax.jit(lambda p, b: enc.forward_all(p, b)["hidden"])
    out_jit = np.asarray(fwd(params, batch))
    out_eager = np.asarray(enc.forward_all(params, batch)["hidden"])
    assert np.isfinite(out_jit).all()
    np.testing.assert_allclose(out_jit, out_eager, atol=1e-5)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_roberta_positions_past_the_table_are_an_error(jit):
    enc, params = _encoder("roberta")
    batch = _batch(P - enc.config.position_offset + 1)  # the last token at position P
    fwd = lambda p, b: enc.forward_all(p, b)["hidden"]
    if jit:
        fwd = jax.jit(fwd)
    with pytest.raises(ValueError, match=f"exceeds max_position_embeddings {P}"):
        np.asarray(fwd(params, batch))
    emb = jax.jit(enc.embed) if jit else enc.embed
    with pytest.raises(ValueError, match="max_position_embeddings"):
        np.asarray(emb(params, batch))


def test_roberta_padded_batch_eagerly_counts_real_tokens_only():
    """Eagerly the bound is on the real positions: pads sit at pad_token_id."""
    enc, params = _encoder("roberta")
    batch = _batch(P - 2, n_pad=3)  # longer than the table, but its real positions fit
    out = np.asarray(enc.forward_all(params, batch)["hidden"])
    assert np.isfinite(out).all()


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_bert_positions_past_the_table_are_an_error(jit):
    enc, params = _encoder("bert")
    fwd = lambda p, b: enc.forward_all(p, b)["hidden"]
    if jit:
        fwd = jax.jit(fwd)
    assert np.isfinite(np.asarray(fwd(params, _batch(P, pad=0)))).all()
    with pytest.raises(ValueError, match=f"sequence length {P + 1} exceeds"):
        np.asarray(fwd(params, _batch(P + 1, pad=0)))
