"""Rationale evaluation of contribution predictors (seed 002 §5.3): AP / FPR on hand-made
cases, sub-word -> word scores, the end-to-end pipeline on ERASER Movies and HateXplain,
and the CP heatmaps."""

import itertools

import jax
import numpy as np
import pytest

from jaxit.data.rationales import load_rationales
from jaxit.encoders import EncoderConfig, init_params, make_encoder
from jaxit.inference.token_drop import TokenDropRunner
from jaxit.interpret.cp_heatmap import cp_heatmap_html, write_cp_heatmaps
from jaxit.interpret.rationales import (
    average_precision,
    encode_rationales,
    evaluate_example,
    evaluate_rationales,
    false_positive_rate,
    fill_dropped,
    true_positive_rate,
    uniform_selected,
    word_scores,
)


def test_average_precision_hand_computed():
    # ranks 1..4 = labels 1 0 1 0: AP = (1/2)(1/1) + (1/2)(2/3) = 5/6
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    # ties form one threshold: {a, b} at 0.5 (P = 1/2, R = 1/2), then c (P = 2/3, R = 1)
    assert average_precision([0.5, 0.5, 0.1], [1, 0, 1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert average_precision([0.1, 0.9, 0.3], [0, 1, 1]) == pytest.approx(1.0)
    assert average_precision([0.3, 0.2, 0.1], [0, 0, 1]) == pytest.approx(1 / 3)
    assert np.isnan(average_precision([0.3, 0.2], [0, 0]))
    with pytest.raises(ValueError, match="shape"):
        average_precision([0.1, 0.2], [1])
    # without ties AP = mean over positives of the precision at their rank
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = rng.permutation(12).astype(float)
        y = rng.integers(0, 2, 12)
        if not y.any():
            continue
        ranks = np.argsort(np.argsort(-s)) + 1
        prec = [np.sum(y[ranks <= r]) / r for r in ranks[y == 1]]
        assert average_precision(s, y) == pytest.approx(np.mean(prec))


def test_fpr_tpr_hand_computed():
    sel = [1, 1, 0, 0, 1]
    lab = [1, 0, 0, 1, 0]
    assert false_positive_rate(sel, lab) == pytest.approx(2 / 3)
    assert true_positive_rate(sel, lab) == pytest.approx(1 / 2)
    assert np.isnan(false_positive_rate([1, 0], [1, 1]))


def test_subwords_to_words():
    # [CLS] un ##like ##ly good [SEP] -> words "unlikely" (3 pieces), "good"
    widx = np.array([-1, 0, 0, 0, 1, -1])
    s = np.array([[0.1, 0.1, 0.2, 0.1, 0.4, 0.1],
                  [0.2, 0.3, np.nan, 0.1, 0.3, np.nan]])
    z = fill_dropped(s, "zero")
    np.testing.assert_allclose(word_scores(z, widx, 2), [[0.4, 0.4], [0.4, 0.3]])
    np.testing.assert_allclose(word_scores(z, widx, 2, "max"), [[0.2, 0.4], [0.3, 0.3]])
    last = fill_dropped(s, "last")
    np.testing.assert_allclose(word_scores(last, widx, 2), [[0.4, 0.4], [0.6, 0.3]])
    # uniform level 1/n over the tokens present: 6 at CP 0 (1/6), 4 at CP 1 (1/4)
    np.testing.assert_array_equal(uniform_selected(s), [[0, 0, 1, 0, 1, 0], [0, 1, 0, 0, 1, 0]])
    with pytest.raises(ValueError, match="reduce"):
        word_scores(z, widx, 2, "mean")


def test_evaluate_example_hand_made():
    # tokens: [CLS] w0a w0b w1 w2 [SEP]; rationale = words 0 and 2
    widx = np.array([-1, 0, 0, 1, 2, -1])
    mask = np.array([1, 0, 1])
    scores = np.array([[0.1, 0.2, 0.1, 0.35, 0.15, 0.1],      # words 0.3, 0.35, 0.15
                       [0.3, 0.3, 0.2, np.nan, 0.15, 0.05]])  # w1 dropped by CP 0
    kept = np.array([[1, 1, 1, 0, 1, 1],   # CP 0 drops w1 -> layer 1 runs without it
                     [1, 1, 0, 0, 0, 0]], bool)  # CP 1 keeps [CLS] and w0a only
    ev = evaluate_example(scores, kept, widx, mask)
    # CP 0 ranking: w1 (0) 0.35, w0 (1) 0.3, w2 (1) 0.15 -> AP = (1/2)(1/2) + (1/2)(2/3)
    # CP 1 (w1 scored 0): w0 0.5, w2 0.15, w1 0 -> AP = 1
    np.testing.assert_allclose(ev.ap, [0.25 + 1 / 3, 1.0])
    np.testing.assert_allclose(ev.fpr, [0.0, 0.0])  # the only non-rationale word, w1, is gone
    np.testing.assert_allclose(ev.tpr, [1.0, 0.5])
    # uniform level 1/n: CP 0 (1/6) selects w0a and w1 -> words w0, w1; CP 1 (1/5) w0 only
    np.testing.assert_allclose(ev.fpr_uniform, [1.0, 0.0])
    assert ev.covered.all()
    # a word cut off by truncation is left out
    ev2 = evaluate_example(scores, kept, widx, np.array([1, 0, 1, 1]))
    np.testing.assert_array_equal(ev2.covered, [1, 1, 1, 0])
    np.testing.assert_allclose(ev2.ap, ev.ap)


def _tiny_runner(vocab, seed=0, eta=0.5):
    cfg = EncoderConfig("bert", vocab, 16, 2, 2, 32, max_position_embeddings=64)
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))

    def draw(path, x):
        name = getattr(path[-1], "key", "")
        if name in ("scale", "bias"):
            return np.full(x.shape, 1.0 if name == "scale" else 0.0, np.float32)
        return (0.02 * rng.standard_normal(x.shape)).astype(np.float32)

    normal = lambda *shape: (0.3 * rng.standard_normal(shape)).astype(np.float32)
    params = {"encoder": jax.tree_util.tree_map_with_path(draw, shapes),
              "heads": {"final": {"pooler": {"kernel": normal(16, 16), "bias": np.zeros(16, np.float32)},
                                  "out": {"kernel": normal(16, 2), "bias": np.zeros(2, np.float32)}},
                        "cp": {"hidden": {"kernel": normal(2, 16, 32), "bias": np.zeros((2, 32), np.float32)},
                               "out": {"kernel": normal(2, 32, 1), "bias": np.zeros((2, 1), np.float32)}},
                        "eta": np.full(2, eta, np.float32), "theta": np.ones(2, np.float32)}}
    return TokenDropRunner(make_encoder(cfg), params, 2, buckets=(16, 32, 64))


@pytest.mark.parametrize("task", ["eraser_movies", "hatexplain"])
def test_pipeline_on_real_rationales(task, data_dir, minilm_dir, tmp_path):
    """Real rationales and tokenizer, a tiny random model (the check is the plumbing)."""
    from jaxit.encoders import load_tokenizer

    tok = load_tokenizer(minilm_dir)
    rats = list(itertools.islice(load_rationales(task, "test", data_dir), 12))
    enc = encode_rationales(tok, rats, max_length=64)
    for e in enc:
        assert e.input_ids.shape[0] <= 64 and (e.word_index >= 0).any()
        np.testing.assert_array_equal(e.token_mask[e.word_index >= 0],
                                      e.rationale.mask[e.word_index[e.word_index >= 0]])
    runner = _tiny_runner(tok.get_vocab_size())
    report, results = evaluate_rationales(runner, enc, keep_results=True)
    assert report.num_examples == len(rats) and len(results) == len(rats)
    L = 2
    for arr in (report.map, report.fpr, report.fpr_uniform, report.tpr):
        assert arr.shape == (L,) and np.all((arr >= 0) & (arr <= 1))
    # kept sets only shrink, so the kept-set FPR and TPR cannot grow with depth
    for e in report.examples:
        assert np.all(np.diff(e.fpr[~np.isnan(e.fpr)]) <= 1e-12)
    assert report.kept_word_fraction[0] < 1.0  # something was dropped
    assert 0 < report.covered_word_fraction <= 1
    if task == "eraser_movies":
        assert report.covered_word_fraction < 1  # long reviews get truncated at 64 tokens
    # η = 0 keeps everything: FPR = TPR = 1 at every layer
    runner.set_eta(0.0)
    full, _ = evaluate_rationales(runner, enc[:4])
    np.testing.assert_allclose(full.fpr[~np.isnan(full.fpr)], 1.0)
    np.testing.assert_allclose(full.tpr[~np.isnan(full.tpr)], 1.0)
    assert "mAP" in report.to_dict() and report.table().count("\n") == L + 1
    # heatmaps of the first examples
    items = [{"tokens": [tok.id_to_token(int(i)) for i in e.input_ids], "scores": r.scores,
              "kept": r.kept, "title": e.rationale.guid, "rationale": e.token_mask}
             for e, r in zip(enc[:2], results[:2])]
    paths = write_cp_heatmaps(items, tmp_path)
    assert paths["html"].stat().st_size > 0 and all(p.stat().st_size > 1000 for p in paths["png"])


def test_heatmap_html_marks_kept_dropped_and_rationale(tmp_path):
    tokens = ["[CLS]", "<b>", "great", "film", "[SEP]"]
    scores = np.array([[0.1, 0.1, 0.5, 0.2, 0.1], [0.3, np.nan, 0.6, 0.1, np.nan]])
    kept = np.array([[1, 0, 1, 1, 0], [1, 0, 1, 0, 0]], bool)
    page = cp_heatmap_html(tokens, scores, kept, title="t<1>", rationale=[0, 0, 1, 0, 0])
    assert "&lt;b&gt;" in page and "<b>" not in page and "t&lt;1&gt;" in page
    lines = [ln for ln in page.split("\n") if "CP " in ln]
    assert len(lines) == 2
    # row 0: "<b>" and [SEP] struck through (dropped here); row 1: they are grey (earlier)
    assert lines[0].count("line-through") == 2 and lines[1].count("dropped earlier") == 2
    assert lines[1].count("line-through") == 1  # "film" dropped by CP 1
    assert "underline" in page
    assert "CP 0 &rarr; layer 1: 3/5" in page
    with pytest.raises(ValueError, match="tokens"):
        cp_heatmap_html(tokens[:3], scores, kept)


def test_lr_eval_writes_reports_and_heatmaps(monkeypatch, data_dir, minilm_dir, tmp_path):
    """`jaxit lr-eval` end to end, with the run loader swapped for a tiny random model."""
    import jaxit.inference.token_drop as td
    from jaxit.encoders import load_tokenizer
    from jaxit.interpret.lr_eval import main

    tiny = _tiny_runner(load_tokenizer(minilm_dir).get_vocab_size())
    params = {"encoder": None, "heads": {"final": {"out": {"kernel": np.zeros((16, 2))}}}}
    monkeypatch.setattr(td, "load_adapler_run", lambda *a, **k: (tiny.encoder, params,
                                                                 minilm_dir))
    monkeypatch.setattr(td, "TokenDropRunner", lambda *a, **k: tiny)
    reports = main(["--workdir", str(tmp_path), "--tasks", "hatexplain", "--num_examples", "5",
                    "--heatmaps", "1", "--max_length", "64", "--eta", "0.4"])
    assert reports["hatexplain"].num_examples == 5
    out = tmp_path / "lr_eval"
    rep = (out / "rationales_hatexplain_test.json").read_text()
    assert '"mAP"' in rep and '"task": "hatexplain"' in rep
    assert (out / "rationale_curves.png").stat().st_size > 1000
    assert (out / "hatexplain" / "cp_heatmaps.html").is_file()
    assert (out / "hatexplain" / "cp_heatmap_0.png").is_file()
