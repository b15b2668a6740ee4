"""AdapLeR Table 2's reduced inputs (`jaxit.interpret.topk_inputs`): top-k by hand, the
strategies' scores against the figure 5 baselines at the predicted class, batching and
padding invariance, and k = the rationale's word count, on a tiny model and on the real
MiniLM-L6 with ERASER Movies reviews."""

import jax
import numpy as np
import pytest

from jaxit.batch import batch_from_ids
from jaxit.data.rationales import Rationale
from jaxit.encoders import EncoderConfig, make_encoder
from jaxit.interpret.rationale_baselines import layer_baseline_scores
from jaxit.interpret.rationales import EncodedRationale
from jaxit.interpret.topk_inputs import (
    STRATEGIES,
    reduce_examples,
    strategy_token_scores,
    topk_words,
)

CFG = EncoderConfig("bert", 60, 32, 2, 4, 64, max_position_embeddings=40)


def test_topk_words_by_hand():
    s = np.array([0.1, 0.5, 0.5, 0.9, 0.2])
    valid = np.ones(5, bool)
    np.testing.assert_array_equal(topk_words(s, 2, valid),
                                  [False, True, False, True, False])  # tie: earlier word
    np.testing.assert_array_equal(topk_words(s, 3, valid), [False, True, True, True, False])
    invalid_best = valid.copy()
    invalid_best[3] = False
    np.testing.assert_array_equal(topk_words(s, 1, invalid_best), [False, True, False, False,
                                                                    False])
    assert topk_words(s, 9, invalid_best).sum() == 4  # fewer than k valid words
    assert topk_words(s, 0, valid).sum() == 0


@pytest.fixture(scope="module")
def model(peaked_classifier):
    return peaked_classifier(CFG)


def _encoded(num, seed=0):
    """Rationales whose words are single tokens (word i = token i + 1; [CLS] 0, [SEP] last)."""
    rng = np.random.default_rng(seed)
    out = []
    for j in range(num):
        w = int(rng.integers(5, 20))
        mask = (rng.random(w) < 0.3).astype(np.uint8)
        mask[0] = 1
        r = Rationale(f"g{j}", tuple(f"w{i}" for i in range(w)), mask, j % 2, ())
        ids = np.concatenate([[2], rng.integers(5, 60, w), [3]]).astype(np.int32)
        widx = np.concatenate([[-1], np.arange(w), [-1]]).astype(np.int32)
        out.append(EncodedRationale(r, ids, np.zeros_like(ids), widx,
                                    np.concatenate([[0], mask, [0]]).astype(np.uint8)))
    return out


def test_saliency_is_for_the_predicted_class(model):
    enc, params = model
    e = _encoded(1)[0]
    b = batch_from_ids(e.input_ids[None], None, None)
    ours = strategy_token_scores(enc, params, b)
    from jaxit.heads import head_outputs

    h = enc.forward_all(params["encoder"], b)["hidden"][-1]
    logits, _ = head_outputs(params["heads"]["final"], h, np.ones((1, e.input_ids.size)), "cls")
    pred = int(np.argmax(np.asarray(logits)[0]))
    ref = layer_baseline_scores(enc, params, b._replace(labels=np.array([pred])))
    wrong = layer_baseline_scores(enc, params, b._replace(labels=np.array([1 - pred])))
    np.testing.assert_allclose(ours["saliency"], ref["saliency"][0], rtol=1e-5)
    assert np.abs(np.asarray(wrong["saliency"][0]) - np.asarray(ours["saliency"])).max() > 1e-5
    np.testing.assert_allclose(ours["attention_cls"], ref["rollout"][-1], rtol=1e-5)
    np.testing.assert_allclose(ours["attention_all"], ref["rollout_received"][-1], rtol=1e-5)


def test_reduce_examples_keeps_k_words_and_ignores_batching(model):
    enc, params = model
    encoded = _encoded(7)
    alone = jax.jit(lambda p, b: strategy_token_scores(enc, p, b))  # one compile per length
    one = reduce_examples(enc, params, encoded, batch_size=1, buckets=(40,))
    many = reduce_examples(enc, params, encoded, batch_size=3, buckets=(8, 16, 40))
    for e, a, b in zip(encoded, one, many):
        k = int(e.rationale.mask.sum())
        assert a.num_rationale == k and a.covered == len(e.rationale.words)
        np.testing.assert_array_equal(a.kept["rationale"], e.rationale.mask.astype(bool))
        for name in STRATEGIES:
            assert a.kept[name].sum() == k
            np.testing.assert_array_equal(a.kept[name], b.kept[name])
        # saliency's kept words are its k best-scored words, by hand
        b1 = batch_from_ids(e.input_ids[None], None, None)
        sal = np.asarray(alone(params, b1)["saliency"][0, 1:-1])
        assert sal[a.kept["saliency"]].min() >= sal[~a.kept["saliency"]].max(initial=-1)
        assert a.text(e.rationale.words, "rationale").split(" ") == [
            w for w, m in zip(e.rationale.words, e.rationale.mask) if m]
    # the strategies are not all the same choice
    assert any((a.kept["saliency"] != a.kept["attention_cls"]).any() for a in one)


def test_only_the_words_the_model_reads_count(model):
    """A review cut at max_length: k and the rationale row count only the covered words."""
    enc, params = model
    e = _encoded(1, seed=3)[0]
    w = len(e.rationale.words)
    cut = w // 2  # the encoding holds the first `cut` words only
    ids = np.concatenate([e.input_ids[:cut + 1], e.input_ids[-1:]])
    widx = np.concatenate([e.word_index[:cut + 1], [-1]]).astype(np.int32)
    short = EncodedRationale(e.rationale, ids, np.zeros_like(ids), widx, e.token_mask[:cut + 2])
    (red,) = reduce_examples(enc, params, [short], batch_size=1, buckets=(40,))
    inside = e.rationale.mask[:cut].astype(bool)
    assert red.covered == cut and red.num_rationale == inside.sum()
    np.testing.assert_array_equal(red.kept["rationale"][:cut], inside)
    assert not red.kept["rationale"][cut:].any()
    for name in STRATEGIES:
        assert red.kept[name].sum() == inside.sum() and not red.kept[name][cut:].any()


def test_gold_saliency_reads_the_labels(model):
    enc, params = model
    e = _encoded(1)[0]
    b = batch_from_ids(e.input_ids[None], None, None)
    for label in (0, 1):
        gold = strategy_token_scores(enc, params, b._replace(labels=np.array([label])),
                                     saliency_class="gold")
        ref = layer_baseline_scores(enc, params, b._replace(labels=np.array([label])))
        np.testing.assert_allclose(gold["saliency"], ref["saliency"][0], rtol=1e-5)
    with pytest.raises(ValueError, match="needs batch.labels"):
        strategy_token_scores(enc, params, b, saliency_class="gold")


def test_real_minilm_on_eraser_movies(minilm_dir, data_dir):
    """The real checkpoint, tokenizer and reviews (words of several sub-words): each kept
    set is the top k of the word sums of that review's own unpadded scores."""
    from jaxit.data.rationales import load_rationales
    from jaxit.encoders.tokenizer import load_tokenizer
    from jaxit.encoders.weights import load_pretrained
    from jaxit.interpret.rationales import encode_rationales, word_scores
    from jaxit.methods.finetune import make_finetune

    cfg, enc_params = load_pretrained(minilm_dir)
    enc = make_encoder(cfg)
    params = make_finetune(enc, 2, False).init(jax.random.PRNGKey(0), enc_params)
    encoded = encode_rationales(load_tokenizer(minilm_dir),
                                load_rationales("eraser_movies", "test", data_dir)[:3], 48)
    reduced = reduce_examples(enc, params, encoded, pooling="mean", batch_size=2,
                              buckets=(32, 48))
    assert any(np.bincount(e.word_index[e.word_index >= 0]).max() > 1 for e in encoded)
    for e, red in zip(encoded, reduced):
        valid = np.zeros(len(e.rationale.words), bool)
        valid[e.word_index[e.word_index >= 0]] = True
        assert red.covered == valid.sum() < len(e.rationale.words)  # cut at 48 tokens
        assert red.num_rationale == (e.rationale.mask.astype(bool) & valid).sum()
        b = batch_from_ids(e.input_ids[None], None, e.token_type_ids[None])
        alone = strategy_token_scores(enc, params, b, "mean")
        for name in STRATEGIES[1:]:
            ws = word_scores(np.asarray(alone[name]), e.word_index, valid.size)[0]
            kept = red.kept[name]
            assert kept.sum() == red.num_rationale and not kept[~valid].any()
            if kept.any():
                assert ws[kept].min() >= ws[valid & ~kept].max(initial=-1.0) - 1e-6
