"""The HF `datasets` path on local files in tmp_path, and the tfds path (if installed)."""

import json
import sys

import pytest

from jaxit.data import DataFormatError, load_examples, load_split

pytest.importorskip("datasets")


def test_hf_csv_single_file(tmp_path):
    p = tmp_path / "sst.csv"
    p.write_text('sentence,label\n"a fine, funny film",1\nterrible,0\n', encoding="utf-8")
    ex = load_examples("sst2", "dev", source="hf", data_files=str(p))
    assert [(e.text_a, e.label) for e in ex] == [("a fine, funny film", 1), ("terrible", 0)]


def test_hf_jsonl_split_mapping_and_string_labels(tmp_path):
    tr, dv = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    tr.write_text(json.dumps({"sentence1": "A.", "sentence2": "B.", "label": "entailment"})
                  + "\n", encoding="utf-8")
    dv.write_text(json.dumps({"sentence1": "C.", "sentence2": "D.", "label": 1}) + "\n"
                  + json.dumps({"sentence1": "E.", "sentence2": "F.", "label": -1}) + "\n",
                  encoding="utf-8")
    files = {"train": str(tr), "dev": str(dv)}  # canonical names map to HF's "validation"
    ex = load_examples("rte", "train", source="hf", data_files=files)
    assert [(e.text_a, e.text_b, e.label) for e in ex] == [("A.", "B.", 0)]
    ex = load_examples("rte", "validation", source="hf", data_files=files)
    assert [(e.text_a, e.label) for e in ex] == [("C.", 1), ("E.", None)]


def test_hf_path_file_and_field_override(tmp_path):
    p = tmp_path / "reviews.json"
    p.write_text(json.dumps({"review": "good", "y": 1}) + "\n", encoding="utf-8")
    ex = load_examples("imdb", "train", source="hf", hf_path=str(p), text_fields=["review"],
                       label_field="y")
    assert ex[0].text_a == "good" and ex[0].label == 1


def test_hf_hatexplain_layout_majority(tmp_path):
    p = tmp_path / "hx.jsonl"
    rows = [
        {"id": "1", "annotators": {"label": [0, 0, 2], "annotator_id": [1, 2, 3]},
         "rationales": [], "post_tokens": ["a", "b"]},
        {"id": "2", "annotators": {"label": [0, 1, 2], "annotator_id": [1, 2, 3]},
         "rationales": [], "post_tokens": ["c"]},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    ls = load_split("hatexplain", "test", source="hf", data_files=str(p))
    assert [(e.text_a, e.label) for e in ls.examples] == [("a b", 0)]
    assert ls.dropped == {"no_majority": 1}


def test_hf_errors(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("sentence,label\nok,5\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"row 0: label id 5 is outside the label set"):
        load_examples("sst2", "train", source="hf", data_files=str(p))
    p.write_text("text,label\nok,1\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"no field 'sentence'; the record has fields "
                                              r"\['label', 'text'\]"):
        load_examples("sst2", "train", source="hf", data_files=str(p))
    with pytest.raises(FileNotFoundError, match="nope.csv not found"):
        load_examples("sst2", "train", source="hf", data_files=str(tmp_path / "nope.csv"))
    with pytest.raises(ValueError, match="data_files has no file for split 'dev'"):
        load_examples("sst2", "dev", source="hf", data_files={"train": str(p)})


def _write_tfds_glue_sst2(root, rows):
    """A tfds data dir holding glue/sst2 validation as array_record, written without
    TensorFlow (serialized with the tfds features, metadata via folder_dataset)."""
    import numpy as np
    import tensorflow_datasets as tfds
    from array_record.python.array_record_module import ArrayRecordWriter

    features = tfds.features.FeaturesDict({
        "sentence": tfds.features.Text(),
        "label": tfds.features.ClassLabel(names=["negative", "positive"]),
        "idx": np.int32,
    })
    d = root / "glue" / "sst2" / "2.0.0"
    d.mkdir(parents=True)
    w = ArrayRecordWriter(str(d / "glue-validation.array_record-00000-of-00001"), "group_size:1")
    for r in rows:
        w.write(features.serialize_example(r))
    w.close()
    tmpl = tfds.core.ShardedFileTemplate(
        data_dir=str(d), template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
        dataset_name="glue", filetype_suffix="array_record")
    split = tfds.core.SplitInfo(name="validation", shard_lengths=[len(rows)], num_bytes=0,
                                filename_template=tmpl)
    tfds.folder_dataset.write_metadata(data_dir=str(d), features=features, split_infos=[split],
                                       filename_template=tmpl, check_data=False)


def test_tfds_prepared(tmp_path):
    pytest.importorskip("tensorflow_datasets", reason="needs the tfds extra "
                        "(pip install 'jaxit[tfds]'; .ci/run installs it)")
    pytest.importorskip("array_record", reason="needs the tfds extra")
    with pytest.raises(FileNotFoundError, match="could not open tfds glue/sst2 split validation"):
        load_examples("sst2", "dev", source="tfds", data_dir=tmp_path)
    _write_tfds_glue_sst2(tmp_path, [{"sentence": "a fine film", "label": 1, "idx": 0},
                                     {"sentence": "dull", "label": 0, "idx": 1}])
    ex = load_examples("sst2", "validation", source="tfds", data_dir=tmp_path)
    assert [(e.text_a, e.label, e.guid) for e in ex] == [("a fine film", 1, "dev-0"),
                                                         ("dull", 0, "dev-1")]


def test_tfds_not_installed_names_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install 'jaxit\[tfds\]'"):
        load_examples("sst2", "dev", source="tfds", data_dir=tmp_path)
