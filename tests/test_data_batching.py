"""Tokenization (parity with transformers' truncation) and length-bucketed batches."""

import numpy as np
import pytest

from jaxit.batch import Batch
from jaxit.data import (
    EncodedDataset,
    Example,
    batch_indices,
    bucket_length,
    encode_words,
    eval_batches,
    iterate_batches,
    load_examples,
    load_rationales,
    make_buckets,
    tokenize_examples,
)
from jaxit.encoders.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tok(minilm_dir):
    return load_tokenizer(minilm_dir)


@pytest.fixture(scope="module")
def hf_tok(minilm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir))


@pytest.mark.parametrize("task,split,n", [("rte", "dev", 277), ("mrpc", "dev", 200),
                                          ("sst2", "dev", 200)])
@pytest.mark.parametrize("max_length", [24, 64])
def test_truncation_matches_transformers(tok, hf_tok, data_dir, task, split, n, max_length):
    ex = load_examples(task, split, data_dir=data_dir)[:n]
    ds = tokenize_examples(tok, task, ex, max_length)
    if ex[0].text_b is None:
        ref = hf_tok([e.text_a for e in ex], truncation=True, max_length=max_length)
    else:
        ref = hf_tok([e.text_a for e in ex], [e.text_b for e in ex], truncation=True,
                     max_length=max_length)
    assert [x.tolist() for x in ds.input_ids] == ref["input_ids"]
    assert [x.tolist() for x in ds.token_type_ids] == ref["token_type_ids"]
    assert ds.lengths.max() <= max_length
    pairs = [(e.text_a, e.text_b) if e.text_b is not None else (e.text_a,) for e in ex]
    full = [len(hf_tok(*p)["input_ids"]) for p in pairs]
    assert ds.truncated.tolist() == [n > max_length for n in full]
    if max_length == 24:
        assert ds.num_truncated > 0
    assert tok.truncation is None and tok.padding is None  # caller's tokenizer untouched


def test_encoded_dataset_fields(tok, data_dir):
    ex = load_examples("stsb", "dev", data_dir=data_dir)[:10]
    ds = tokenize_examples(tok, "stsb", ex, 128)
    assert ds.is_regression and ds.labels.dtype == np.float32
    assert ds.labels[0] == pytest.approx(5.0)
    assert all(x.dtype == np.int32 for x in ds.input_ids)
    assert ds.input_ids[0][0] == 101 and ds.input_ids[0][-1] == 102
    assert set(ds.token_type_ids[0].tolist()) == {0, 1}
    assert ds.guids == [e.guid for e in ex]
    sub = ds.select([3, 1])
    assert sub.guids == [ex[3].guid, ex[1].guid] and len(sub) == 2
    unl = tokenize_examples(tok, "rte", [Example("a", "b", None, "t-0")], 16)
    assert unl.labels.tolist() == [-1] and unl.labels.dtype == np.int32


def test_max_length_too_short(tok):
    with pytest.raises(ValueError, match="max_length 4 is too short"):
        tokenize_examples(tok, "rte", [Example("a b", "c d", 0)], 4)


def test_make_buckets():
    assert make_buckets(128) == (16, 32, 64, 128)
    assert make_buckets(48) == (16, 32, 48)
    assert make_buckets(512, (16, 64)) == (16, 64, 512)
    assert bucket_length(17, (16, 32)) == 32 and bucket_length(16, (16, 32)) == 16
    with pytest.raises(ValueError, match="longer than the largest bucket 32"):
        bucket_length(33, (16, 32))


def _fake(lengths, regression=False) -> EncodedDataset:
    ids = [np.arange(1, n + 1, dtype=np.int32) for n in lengths]
    labels = (np.arange(len(lengths)) % 2).astype(np.float32 if regression else np.int32)
    return EncodedDataset(ids, [np.zeros(n, np.int32) for n in lengths], labels,
                          [f"g{i}" for i in range(len(lengths))], 64, regression)


def test_batches_padded_to_bucket_of_longest():
    rng = np.random.default_rng(0)
    ds = _fake(rng.integers(3, 65, size=100).tolist())
    for b in iterate_batches(ds, 8, buckets=(16, 32, 64), seed=1, pad_id=999):
        assert isinstance(b, Batch)
        real = b.attention_mask.sum(1)
        t = b.input_ids.shape[1]
        assert t == bucket_length(real.max(), (16, 32, 64))
        assert b.input_ids.dtype == np.int32 and b.attention_mask.dtype == np.int32
        assert (b.input_ids[b.attention_mask == 0] == 999).all()
        assert (b.input_ids[b.attention_mask == 1] != 999).all()


def test_shapes_are_few_on_real_data(tok, data_dir):
    ds = tokenize_examples(tok, "rte", load_examples("rte", "dev", data_dir=data_dir), 128)
    shapes = {b.input_ids.shape for b in iterate_batches(ds, 16, seed=0, drop_remainder=True)}
    assert shapes <= {(16, 16), (16, 32), (16, 64), (16, 128)}


def test_shuffle_deterministic_from_seed_and_epoch():
    ds = _fake(list(range(3, 60)))
    a = [b.input_ids for b in iterate_batches(ds, 4, seed=3, epoch=2)]
    b = [b.input_ids for b in iterate_batches(ds, 4, seed=3, epoch=2)]
    c = [b.input_ids for b in iterate_batches(ds, 4, seed=3, epoch=3)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b) == 57 // 4
    assert not all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, c))


def test_drop_remainder_and_last_partial():
    ds = _fake([5] * 10)
    assert [len(b.labels) for b in iterate_batches(ds, 4, drop_remainder=True)] == [4, 4]
    assert [len(b.labels) for b in iterate_batches(ds, 4, drop_remainder=False)] == [4, 4, 2]
    idx = batch_indices(10, 4, shuffle=True, seed=0, drop_remainder=False)
    assert sorted(np.concatenate(idx).tolist()) == list(range(10))


def test_sort_within_chunks_reduces_padding():
    rng = np.random.default_rng(1)
    lengths = rng.integers(3, 65, size=512)
    ds = _fake(lengths.tolist())

    def padded(**kw):
        return sum(b.input_ids.size for b in iterate_batches(ds, 16, buckets=(8, 16, 24, 32, 48, 64),
                                                             seed=0, **kw))

    assert padded(sort_chunk=8) < 0.85 * padded()
    idx = batch_indices(512, 16, seed=0, lengths=lengths, sort_chunk=8)
    assert sorted(np.concatenate(idx).tolist()) == list(range(512))
    again = batch_indices(512, 16, seed=0, lengths=lengths, sort_chunk=8)
    assert all(np.array_equal(x, y) for x, y in zip(idx, again))


def test_eval_batches_cover_each_example_once():
    ds = _fake([3, 9, 20, 4, 33, 7, 8, 2, 40, 5, 6])
    seen = []
    for batch, valid, index in eval_batches(ds, 4, return_index=True):
        assert batch.input_ids.shape[0] == 4 and valid.shape == (4,)
        assert (index[~valid] == -1).all()
        seen += index[valid].tolist()
        # filler rows are ordinary inputs (copies of a real row), never all-padding
        assert (batch.attention_mask.sum(1) > 0).all()
    assert seen == list(range(11))
    pairs = list(eval_batches(ds, 4))
    assert [int(v.sum()) for _, v in pairs] == [4, 4, 3]
    labels = np.concatenate([b.labels[v] for b, v in pairs])
    assert labels.tolist() == ds.labels.tolist()
    sorted_seen = [i for _, v, idx in eval_batches(ds, 4, sort_by_length=True, return_index=True)
                   for i in idx[v].tolist()]
    assert sorted(sorted_seen) == list(range(11))


def test_encode_words_maps_rationale_mask(tok, data_dir):
    r = next(r for r in load_rationales("eraser_movies", "dev", data_dir=data_dir)
             if r.spans[0][0] < 100)
    ids, _, widx, tmask = encode_words(tok, r.words, 512, r.mask)
    plain = tokenize_examples(tok, "eraser_movies", [Example(" ".join(r.words), None, 0)], 512)
    assert ids.tolist() == plain.input_ids[0].tolist()
    assert widx[0] == -1 and widx[-1] == -1
    real = widx >= 0
    assert (tmask[real] == r.mask[widx[real]]).all() and tmask.any()
