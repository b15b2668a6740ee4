"""The generated demo task and its tokenizer."""

import collections

import numpy as np

from jaxit.data import (
    eval_batches,
    get_task,
    load_examples,
    make_synthetic_task,
    synthetic_tokenizer,
    tokenize_examples,
)
from jaxit.data.synthetic import (
    SPECIAL_TOKENS,
    synthetic_label,
    synthetic_score,
    synthetic_vocabulary,
)


def test_deterministic_and_independent_streams():
    a_tr, a_dv = make_synthetic_task(300, 100, seed=5)
    b_tr, b_dv = make_synthetic_task(300, 100, seed=5)
    assert a_tr == b_tr and a_dv == b_dv
    c_tr, c_dv = make_synthetic_task(50, 100, seed=5)
    assert c_dv == a_dv and c_tr == a_tr[:50]  # dev does not depend on n_train
    d_tr, _ = make_synthetic_task(300, 100, seed=6)
    assert d_tr != a_tr


def test_labels_follow_the_words_and_are_balanced():
    tr, dv = make_synthetic_task(2000, 200, seed=0)
    for e in tr + dv:
        assert e.label == synthetic_label(e.text_a) and synthetic_score(e.text_a) != 0
    frac = np.mean([e.label for e in tr])
    assert 0.45 < frac < 0.55
    assert synthetic_score("the film was not bad but terrible") == 2 - 3
    assert synthetic_score("not the good one") == 2  # "not" must be right before the word


def test_difficulty_spread():
    tr, _ = make_synthetic_task(2000, 0, seed=1)
    counts = collections.Counter(e.difficulty for e in tr)
    assert set(counts) == {0, 1, 2} and min(counts.values()) > 450
    for e in tr:
        words = e.text_a.split()
        sentiment = [w for w in words if synthetic_score(w) != 0]
        if e.difficulty == 0:
            assert len(sentiment) == 1 and abs(synthetic_score(e.text_a)) == 3
            assert "not" not in words
        elif e.difficulty == 2:
            assert abs(synthetic_score(e.text_a)) == 1 and "not" in words
            assert len(sentiment) >= 3
            assert {synthetic_score(w) > 0 for w in sentiment} == {True, False}


def test_tokenizer_round_trip_and_specials():
    tok = synthetic_tokenizer()
    vocab = synthetic_vocabulary()
    assert 150 <= len(vocab) <= 250 and tok.get_vocab_size() == len(vocab)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    tr, _ = make_synthetic_task(50, 0, seed=0)
    for e in tr:
        enc = tok.encode(e.text_a)
        assert enc.ids[0] == 2 and enc.ids[-1] == 3 and 1 not in enc.ids
        assert tok.decode(enc.ids) == e.text_a
    pair = tok.encode("good film", "not bad")
    assert pair.tokens == ["[CLS]", "good", "film", "[SEP]", "not", "bad", "[SEP]"]
    assert pair.type_ids == [0, 0, 0, 0, 1, 1, 1]
    assert tok.encode("Zyzzyx").ids == [2, 1, 3]


def test_registered_and_loadable():
    t = get_task("synthetic")
    assert t.num_labels == 2 and t.metrics == ("accuracy",)
    ex = load_examples("synthetic", "dev", source="synthetic", n_dev=40, seed=2)
    assert ex == make_synthetic_task(1, 40, seed=2)[1]
    ds = tokenize_examples(synthetic_tokenizer(), t, ex, 32)
    assert ds.lengths.max() <= 24 and ds.difficulty.tolist() == [e.difficulty for e in ex]
    assert sum(int(v.sum()) for _, v in eval_batches(ds, 16)) == 40
