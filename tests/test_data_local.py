"""The local loaders on the real files in the shared data dir (read in place)."""

import collections
import json

import numpy as np
import pytest

from jaxit.data import get_task, load_examples, load_rationales, load_split


def _labels(examples, task):
    names = get_task(task).label_names
    return dict(collections.Counter(names[e.label] for e in examples))


@pytest.mark.parametrize("task,split,n", [
    ("sst2", "train", 67349), ("sst2", "dev", 872),
    ("mrpc", "train", 3668), ("mrpc", "dev", 408),
    ("rte", "train", 2490), ("rte", "dev", 277),
    ("stsb", "train", 5749), ("stsb", "dev", 1500),
    ("qnli", "dev", 5463),
    ("mnli", "dev_matched_subset", 1000),
    ("imdb", "test_subset", 2000),
    ("hatexplain", "train", 15383), ("hatexplain", "dev", 1922), ("hatexplain", "test", 1924),
    ("eraser_movies", "train", 1600), ("eraser_movies", "dev", 200),
    ("eraser_movies", "test", 200),
])
def test_row_counts(data_dir, task, split, n):
    ls = load_split(task, split, data_dir=data_dir)
    assert len(ls.examples) == n
    assert ls.dropped == {}
    assert all(e.text_a.strip() for e in ls.examples)
    assert all((e.text_b is not None) == get_task(task).is_pair for e in ls.examples)
    assert len({e.guid for e in ls.examples}) == n


@pytest.mark.parametrize("task,split,counts", [
    ("sst2", "train", {"negative": 29780, "positive": 37569}),
    ("sst2", "dev", {"negative": 428, "positive": 444}),
    ("mrpc", "train", {"equivalent": 2474, "not_equivalent": 1194}),
    ("rte", "train", {"entailment": 1249, "not_entailment": 1241}),
    ("rte", "dev", {"entailment": 146, "not_entailment": 131}),
    ("qnli", "dev", {"not_entailment": 2761, "entailment": 2702}),
    ("mnli", "dev_matched_subset", {"entailment": 373, "contradiction": 316, "neutral": 311}),
    ("imdb", "test_subset", {"neg": 1000, "pos": 1000}),
    ("hatexplain", "test", {"normal": 782, "hatespeech": 594, "offensive": 548}),
    ("eraser_movies", "train", {"NEG": 800, "POS": 800}),
])
def test_label_distributions(data_dir, task, split, counts):
    assert _labels(load_examples(task, split, data_dir=data_dir), task) == counts


def test_mrpc_bom_stripped(data_dir):
    ex = load_examples("MRPC", "dev", data_dir=data_dir)
    assert not ex[0].text_a.startswith("\ufeff")
    assert ex[0].text_a.startswith("He said the foodservice pie business")
    assert ex[0].text_b.startswith('" The foodservice pie business')
    assert ex[0].label == 1


def test_rte_row_2164_keeps_leading_space(data_dir):
    ex = {e.guid: e for e in load_examples("rte", "train", data_dir=data_dir)}
    assert ex["train-2164"].text_a.startswith(' "That film wasn\'t too successful')


def test_qnli_unbalanced_quotes_do_not_merge_rows(data_dir):
    ex = {e.guid: e for e in load_examples("qnli", "dev", data_dir=data_dir)}
    assert len(ex) == 5463
    for idx in (658, 694, 2701, 3428, 3479, 3529, 3917, 4080):
        assert ex[f"dev-{idx}"].text_b.startswith('"'), idx
        assert "\t" not in ex[f"dev-{idx}"].text_b
    assert ex["dev-694"].text_b.startswith('" Luis Walter Alvarez')


def test_stsb_control_char_and_float_labels(data_dir):
    ex = load_examples("stsb", "train", data_dir=data_dir)
    row = next(e for e in ex if e.guid == "train-2918")
    assert "Treasury\x12s long-range plan" in row.text_a
    assert row.label == pytest.approx(4.4)
    labels = np.array([e.label for e in ex])
    assert labels.min() >= 0.0 and labels.max() <= 5.0
    assert load_examples("stsb", "dev", data_dir=data_dir)[0].label == pytest.approx(5.0)


def test_imdb_nel_rows_not_split(data_dir):
    ex = load_examples("imdb", "test_subset", data_dir=data_dir)
    with_nel = [e for e in ex if "\x85" in e.text_a]
    assert len(with_nel) == 19
    assert ex[0].guid.startswith("test_subset-test/")


def test_mnli_subset_is_tokenized_pairs(data_dir):
    ex = load_examples("mnli", "textfooler", data_dir=data_dir)
    assert ex[0].text_a.startswith("In Temple Bar , the bookshop")
    assert get_task("mnli").label_names[ex[0].label] == "entailment"


def test_mnli_dev_matched_missing_names_path_and_subset(data_dir):
    with pytest.raises(FileNotFoundError, match=r"MNLI/dev_matched.tsv not found.*"
                                                r"dev_matched_subset"):
        load_examples("mnli", "dev", data_dir=data_dir)


def test_hatexplain_text_and_majority(data_dir):
    ex = load_examples("hatexplain", "train", data_dir=data_dir)
    first = ex[0]
    assert first.guid == "23107796_gab"
    assert first.text_a.startswith("u really think i would not have been raped")
    # annotators: hatespeech, offensive, offensive -> offensive
    assert get_task("hatexplain").label_names[first.label] == "offensive"


def test_hatexplain_no_majority_dropped_and_counted(tmp_path):
    d = tmp_path / "HateXplain"
    d.mkdir()
    rows = [
        {"post_id": "a", "annotators": [{"label": "normal"}, {"label": "normal"},
                                        {"label": "offensive"}],
         "rationales": [], "post_tokens": ["hi", "there"]},
        {"post_id": "b", "annotators": [{"label": "normal"}, {"label": "hatespeech"},
                                        {"label": "offensive"}],
         "rationales": [], "post_tokens": ["x"]},
    ]
    (d / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    ls = load_split("hatexplain", "dev", data_dir=tmp_path)
    assert [e.guid for e in ls.examples] == ["a"]
    assert ls.examples[0].text_a == "hi there"
    assert ls.dropped == {"no_majority": 1}


def test_eraser_text_from_docs(data_dir):
    ex = load_examples("eraser_movies", "train", data_dir=data_dir)
    assert ex[0].guid == "negR_000.txt"
    assert ex[0].text_a.startswith("plot : two teen couples go to a church party , drink")
    assert "\n" not in ex[0].text_a


def test_eraser_rationales_align_with_examples(data_dir):
    rats = load_rationales("eraser_movies", "dev", data_dir=data_dir)
    ex = load_examples("eraser_movies", "dev", data_dir=data_dir)
    assert len(rats) == 200
    for r, e in zip(rats[:20], ex[:20]):
        assert r.guid == e.guid and r.label == e.label
        assert list(r.words) == e.text_a.split(" ")
        assert r.mask.shape == (len(r.words),) and r.mask.dtype == np.uint8
        assert r.mask.any()
        for s, t in r.spans:
            assert r.mask[s:t].all()
    assert sum(len(r.spans) for r in rats) == 1517
    first = load_rationales("eraser_movies", "train", data_dir=data_dir)[0]
    # negR_000's evidence "mind - fuck movie" is tokens [63, 67)
    assert (63, 67) in first.spans
    assert " ".join(first.words[63:67]) == "mind - fuck movie"


def test_hatexplain_rationales(data_dir):
    rats = load_rationales("hatexplain", "train", data_dir=data_dir)
    assert len(rats) == 15383 - 6251  # every non-normal post has rationales
    by_id = {r.guid: r for r in rats}
    # the known quirk: a 48-long rationale for 47 tokens is cut to the tokens
    q = by_id["24439295_gab"]
    assert q.mask.shape == (47,) == (len(q.words),)
    r0 = by_id["23107796_gab"]
    # two annotators; mean >= 0.5 keeps tokens either marked
    assert r0.mask[8] == 1 and r0.mask[21] == 1 and r0.mask[0] == 0


def test_load_examples_default_data_dir():
    assert len(load_examples("rte", "dev")) == 277
