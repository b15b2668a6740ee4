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
    NEGATIVE,
    POSITIVE,
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


def _rule(text: str) -> int:
    """The documented rule, written out independently of the module: each sentiment word
    counts polarity * strength, sign-flipped when the word right before it is "not"."""
    strength = {w: s for table in (POSITIVE, NEGATIVE) for s, ws in table.items() for w in ws}
    polarity = {w: (1 if w in sum(POSITIVE.values(), ()) else -1) for w in strength}
    words = text.split()
    score = sum(polarity[w] * strength[w] * (-1 if i and words[i - 1] == "not" else 1)
                for i, w in enumerate(words) if w in strength)
    return score


def test_labels_equal_the_documented_rule_and_are_balanced():
    tr, dv = make_synthetic_task(2000, 200, seed=0)
    for e in tr + dv:
        score = _rule(e.text_a)
        assert score != 0 and e.label == int(score > 0)
        assert e.label == synthetic_label(e.text_a) and synthetic_score(e.text_a) == score
        assert "not not" not in e.text_a and set(e.text_a.split()) <= set(synthetic_vocabulary())
    frac = np.mean([e.label for e in tr])
    assert 0.45 < frac < 0.55
    for d in (0, 1, 2):  # balanced within each difficulty too: no label shortcut
        assert 0.4 < np.mean([e.label for e in tr if e.difficulty == d]) < 0.6
    assert synthetic_score("the film was not bad but terrible") == 2 - 3
    assert synthetic_score("not the good one") == 2  # "not" must be right before the word


def _sentiment(words):
    """(surface polarity, negated) of each sentiment word."""
    return [(synthetic_score(w) > 0, i > 0 and words[i - 1] == "not")
            for i, w in enumerate(words) if synthetic_score(w) != 0]


def test_difficulty_spread():
    tr, _ = make_synthetic_task(2000, 0, seed=1)
    counts = collections.Counter(e.difficulty for e in tr)
    assert set(counts) == {0, 1, 2} and min(counts.values()) > 450
    for e in tr:
        words = e.text_a.split()
        assert 6 <= len(words) <= 9
        sent = _sentiment(words)
        resolved = {pos != neg for pos, neg in sent}  # polarity once negation is resolved
        assert resolved == {bool(e.label)}  # every sentiment word agrees with the label
        if e.difficulty == 0:  # lexical: 1-2 medium/strong words, no "not" at all
            assert 1 <= len(sent) <= 2 and "not" not in words
            assert all(abs(synthetic_score(w)) >= 2 for w in words if synthetic_score(w))
        elif e.difficulty == 1:  # 2-3 words, surface polarities disagree, as many "not"s
            assert 2 <= len(sent) <= 3 and len({pos for pos, _ in sent}) == 2
            assert any(neg for _, neg in sent) and words.count("not") == len(sent)
        else:  # one word, negated or not, and always two "not"s
            assert len(sent) == 1 and words.count("not") == 2
    hard = [e for e in tr if e.difficulty == 2]
    negated = np.mean([_sentiment(e.text_a.split())[0][1] for e in hard])
    assert 0.4 < negated < 0.6  # "not" before the word half of the time


def test_no_bag_of_words_shortcut():
    """Within medium and hard, what a bag of words sees (the count of "not"s, the length, the
    surface polarities) is distributed the same for both labels: only word order tells."""
    tr, _ = make_synthetic_task(4000, 0, seed=2)
    for d in (1, 2):
        for feature in (lambda w: w.count("not"), len,
                        lambda w: sum(synthetic_score(x) > 0 for x in w)):
            by_label = [[feature(e.text_a.split()) for e in tr
                         if e.difficulty == d and e.label == y] for y in (0, 1)]
            if d == 2 and feature is len:
                assert set(by_label[0]) == set(by_label[1]) == set(range(6, 10))
            assert abs(np.mean(by_label[0]) - np.mean(by_label[1])) < 0.15, (d, by_label)


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
    assert ds.lengths.max() <= 11 and ds.difficulty.tolist() == [e.difficulty for e in ex]
    assert sum(int(v.sum()) for _, v in eval_batches(ds, 16)) == 40
