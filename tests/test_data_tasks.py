"""Task registry: names, aliases, fields, metrics, splits."""

import dataclasses

import pytest

from jaxit.data import get_task, task_names
from jaxit.data.tasks import TaskSpec


def test_all_tasks_registered():
    expected = {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "sick",
                "imdb", "ag_news", "dbpedia", "hatexplain", "eraser_movies", "synthetic"}
    assert expected <= set(task_names())


@pytest.mark.parametrize("alias,name", [
    ("SST-2", "sst2"), ("sst_2", "sst2"), ("Sst2", "sst2"), ("STS-B", "stsb"), ("MNLI", "mnli"),
    ("CoLA", "cola"), ("AG-News", "ag_news"), ("dbpedia_14", "dbpedia"),
    ("ERASER-movies", "eraser_movies"), ("movie_rationales", "eraser_movies"),
    ("HateXplain", "hatexplain"), ("imdb_reviews", "imdb"),
])
def test_aliases_case_insensitive(alias, name):
    assert get_task(alias).name == name


def test_unknown_task_lists_known():
    with pytest.raises(ValueError, match="unknown task 'sst3'.*known tasks:.*sst2.*rte"):
        get_task("sst3")


def test_specs_are_frozen_and_hashable():
    t = get_task("mrpc")
    assert isinstance(t, TaskSpec)
    hash(t)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.name = "x"
    assert get_task(t) is t


@pytest.mark.parametrize("name,metrics,num_labels,pair,reg", [
    ("cola", ("mcc", "accuracy"), 2, False, False),
    ("sst2", ("accuracy",), 2, False, False),
    ("mrpc", ("f1", "accuracy"), 2, True, False),
    ("qqp", ("f1", "accuracy"), 2, True, False),
    ("stsb", ("pearson", "spearman"), 1, True, True),
    ("sick", ("pearson", "spearman"), 1, True, True),
    ("mnli", ("accuracy",), 3, True, False),
    ("qnli", ("accuracy",), 2, True, False),
    ("rte", ("accuracy",), 2, True, False),
    ("wnli", ("accuracy",), 2, True, False),
    ("imdb", ("accuracy",), 2, False, False),
    ("ag_news", ("accuracy",), 4, False, False),
    ("dbpedia", ("accuracy",), 14, False, False),
    ("hatexplain", ("macro_f1", "accuracy"), 3, False, False),
    ("eraser_movies", ("accuracy",), 2, False, False),
    ("synthetic", ("accuracy",), 2, False, False),
])
def test_task_fields(name, metrics, num_labels, pair, reg):
    t = get_task(name)
    assert t.metrics == metrics and t.primary_metric == metrics[0]
    assert t.num_labels == num_labels
    assert t.is_pair == pair
    assert t.is_regression == reg
    assert (t.label_names is None) == reg


def test_hf_and_glue_layouts():
    t = get_task("rte")
    assert t.glue_dir == "RTE"
    assert t.hf.id == "nyu-mll/glue" and t.hf.config == "rte"
    assert t.hf.split_for("dev") == "validation"
    assert t.label_names == ("entailment", "not_entailment")  # HF ClassLabel order
    assert get_task("mnli").hf.split_for("dev_mismatched") == "validation_mismatched"
    assert get_task("mnli").label_names == ("entailment", "neutral", "contradiction")
    assert get_task("sst2").tfds.name == "glue/sst2"


def test_split_aliases_and_unknown_split():
    assert get_task("sst2").resolve_split("validation") == "dev"
    assert get_task("hatexplain").resolve_split("val") == "dev"
    assert get_task("mnli").resolve_split("dev") == "dev_matched"
    assert get_task("mnli").resolve_split("validation_mismatched") == "dev_mismatched"
    with pytest.raises(ValueError, match="task 'imdb' has no split 'dev'; known splits: "
                                         "train, test, test_subset"):
        get_task("imdb").resolve_split("dev")
