"""Clear errors for bad inputs, on small files in tmp_path."""

import re

import pytest

from jaxit.data import DataFormatError, load_examples, load_split


def _write(root, task_dir, name, text):
    d = root / task_dir
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(text, encoding="utf-8")
    return p


RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"


def test_good_file_with_crlf_and_bom(tmp_path):
    _write(tmp_path, "RTE", "dev.tsv",
           "\ufeff" + RTE_HEADER.replace("\n", "\r\n") + "0\tA b.\tC d.\tentailment\r\n")
    ex = load_examples("rte", "dev", data_dir=tmp_path)
    assert [(e.text_a, e.text_b, e.label, e.guid) for e in ex] == [("A b.", "C d.", 0, "dev-0")]


def test_wrong_column_count(tmp_path):
    p = _write(tmp_path, "RTE", "dev.tsv",
               RTE_HEADER + "0\tA.\tB.\tentailment\n1\tA.\tB.\textra\tentailment\n")
    with pytest.raises(DataFormatError, match=rf"{re.escape(str(p))}:3: expected 4 tab-separated columns.*found 5"):
        load_examples("rte", "dev", data_dir=tmp_path)


def test_skip_bad_rows_counts_them(tmp_path):
    _write(tmp_path, "RTE", "dev.tsv",
           RTE_HEADER + "0\tA.\tB.\tentailment\n1\tA.\tB.\textra\tentailment\n2\tC.\tD.\tmaybe\n")
    ls = load_split("rte", "dev", data_dir=tmp_path, on_bad_row="skip")
    assert len(ls.examples) == 1 and ls.dropped == {"bad_rows": 2}


def test_empty_text(tmp_path):
    p = _write(tmp_path, "SST-2", "train.tsv", "sentence\tlabel\nfine .\t1\n   \t0\n")
    with pytest.raises(DataFormatError, match=rf"{re.escape(str(p))}:3: empty text in column 'sentence'"):
        load_examples("sst2", "train", data_dir=tmp_path)


def test_unknown_label_names_allowed(tmp_path):
    p = _write(tmp_path, "RTE", "dev.tsv", RTE_HEADER + "0\tA.\tB.\tneutral\n")
    with pytest.raises(DataFormatError, match=rf"{re.escape(str(p))}:2: label 'neutral' is not in the label set "
                                              r"of task rte: allowed labels \['entailment', "
                                              r"'not_entailment'\]"):
        load_examples("rte", "dev", data_dir=tmp_path)


def test_numeric_label_outside_set(tmp_path):
    p = _write(tmp_path, "SST-2", "dev.tsv", "sentence\tlabel\nok\t2\n")
    with pytest.raises(DataFormatError, match=rf"{re.escape(str(p))}:2: label '2'.*allowed labels \['0', '1'\]"):
        load_examples("sst2", "dev", data_dir=tmp_path)


def test_regression_label_out_of_range_and_not_a_number(tmp_path):
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    p = _write(tmp_path, "STS-B", "dev.tsv", header + "0\tg\tf\ty\t0\tn\tn\tA.\tB.\t7.5\n")
    with pytest.raises(DataFormatError, match=rf"{re.escape(str(p))}:2: label 7.5 is outside.*\[0.0, 5.0\]"):
        load_examples("stsb", "dev", data_dir=tmp_path)
    _write(tmp_path, "STS-B", "dev.tsv", header + "0\tg\tf\ty\t0\tn\tn\tA.\tB.\thigh\n")
    with pytest.raises(DataFormatError, match=r"dev.tsv:2: label 'high' is not a number"):
        load_examples("stsb", "dev", data_dir=tmp_path)


def test_missing_header_column(tmp_path):
    p = _write(tmp_path, "SST-2", "dev.tsv", "text\tlabel\nok\t1\n")
    with pytest.raises(DataFormatError, match=rf"{re.escape(str(p))}:1: header has no column 'sentence'"):
        load_examples("sst2", "dev", data_dir=tmp_path)


def test_missing_split_file_names_path(tmp_path):
    _write(tmp_path, "RTE", "train.tsv", RTE_HEADER)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'RTE' / 'dev.tsv'} not found")):
        load_examples("rte", "dev", data_dir=tmp_path)


def test_missing_task_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"task folder {tmp_path / 'CoLA'} not found")):
        load_examples("cola", "train", data_dir=tmp_path)


def test_unknown_task_and_split_and_source(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'glue'.*known tasks"):
        load_examples("glue", "dev", data_dir=tmp_path)
    with pytest.raises(ValueError, match="task 'rte' has no split 'validate'; known splits: "
                                         "train, dev, test"):
        load_examples("rte", "validate", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown data source 'csv'"):
        load_examples("rte", "dev", source="csv", data_dir=tmp_path)


def test_headerless_cola_and_unlabeled_test(tmp_path):
    _write(tmp_path, "CoLA", "dev.tsv", "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n"
                                        "gj04\t0\t*\tThe more we study verbs.\n")
    ex = load_examples("cola", "dev", data_dir=tmp_path)
    assert [(e.label, e.guid) for e in ex] == [(1, "dev-0"), (0, "dev-1")]
    _write(tmp_path, "CoLA", "test.tsv", "index\tsentence\n0\tBill whistled past the house.\n")
    ex = load_examples("cola", "test", data_dir=tmp_path)
    assert ex[0].label is None and ex[0].guid == "test-0"
    p = _write(tmp_path, "CoLA", "train.tsv", "gj04\t1\tonly three\n")
    with pytest.raises(DataFormatError, match=rf"{re.escape(str(p))}:1: expected 4 tab-separated columns, found 3"):
        load_examples("cola", "train", data_dir=tmp_path)


def test_bad_jsonl(tmp_path):
    p = _write(tmp_path, "HateXplain", "test.jsonl", '{"post_id": "a", "annotators": [{"label": '
               '"normal"}], "post_tokens": ["x"]}\n{not json}\n')
    with pytest.raises(DataFormatError, match=rf"{re.escape(str(p))}:2: not valid JSON"):
        load_examples("hatexplain", "test", data_dir=tmp_path)
    p = _write(tmp_path, "HateXplain", "test.jsonl", '{"post_id": "a", "annotators": [{"label": '
               '"spam"}], "post_tokens": ["x"]}\n')
    with pytest.raises(DataFormatError, match=rf"{re.escape(str(p))}:1: label 'spam' is not in the label set"):
        load_examples("hatexplain", "test", data_dir=tmp_path)
    p = _write(tmp_path, "HateXplain", "test.jsonl", '{"post_id": "a", "annotators": [{"label": '
               '"normal"}], "post_tokens": []}\n')
    with pytest.raises(DataFormatError, match=rf"{re.escape(str(p))}:1: empty text"):
        load_examples("hatexplain", "test", data_dir=tmp_path)


def test_eraser_missing_doc(tmp_path):
    _write(tmp_path, "ERASER-movies", "val.jsonl",
           '{"annotation_id": "negR_999.txt", "classification": "NEG", "evidences": []}\n')
    with pytest.raises(FileNotFoundError, match="negR_999.txt not found"):
        load_examples("eraser_movies", "dev", data_dir=tmp_path)
