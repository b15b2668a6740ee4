"""The task registry: what every supported task's data looks like and how it is scored.

A `TaskSpec` says, for one task, which text field(s) it has (one sentence or a pair), its
label set (or that it is a regression), its metrics (primary first), and where its data
lives for each source:

- `local`: files in the GLUE layout under a data dir (`DATA_DIR/<dir>/<file>`), one
  `LocalFile` per split (TSV columns by header name, or by position for header-less files;
  or a JSON-lines format such as HateXplain's or ERASER's);
- `hf`: a Hugging Face `datasets` id/config, its field names and split names;
- `tfds`: a `tensorflow-datasets` name, its field names and split names.

Split names are canonical across sources ("train", "dev", "test"; MNLI has "dev_matched",
"dev_mismatched", ...); each source maps them to its own names ("validation", "val.jsonl").
Label ids follow the Hugging Face `datasets` ClassLabel order, so every source gives the same
id for the same label.

`get_task("SST-2")` (case-insensitive, aliases accepted) returns the spec; an unknown name
raises a ValueError that lists the known tasks.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

# Column reference: a header name (files with a header) or a 0-based index (files without).
Column = str | int


@dataclasses.dataclass(frozen=True)
class LocalFile:
    """One split's file in the local (GLUE-layout) data dir.

    filenames:     candidates inside the task folder; the first that exists is read.
    format:        "tsv" (tab-separated, no quoting), "hatexplain" (HateXplain jsonl),
                   "eraser" (ERASER annotations jsonl + docs/ folder) or "news_csv" (the
                   char-CNN CSVs of AG News / DBpedia: label, title, text; quoted, with or
                   without the Kaggle header; the text columns are joined with a space).
    header:        whether the TSV's first line names the columns.
    text_columns:  the text column(s) (names when `header`, else indices).
    label_column:  the label column, or None for unlabeled files (GLUE test sets).
    label_values:  raw label strings in label-id order (e.g. ("0", "1") for SST-2);
                   None = the task's `label_names`. Ignored for regression (floats).
    num_columns:   expected column count for header-less TSVs (header files: the header's).
    guid_column:   a column whose value names the row (e.g. "index"), else the row number.
    """

    filenames: tuple[str, ...]
    format: Literal["tsv", "hatexplain", "eraser", "news_csv"] = "tsv"
    header: bool = True
    text_columns: tuple[Column, ...] = ()
    label_column: Column | None = None
    label_values: tuple[str, ...] | None = None
    num_columns: int | None = None
    guid_column: Column | None = None


@dataclasses.dataclass(frozen=True)
class LocalLayout:
    """A task's folder in the local data dir and its per-split files."""

    dir: str
    files: tuple[tuple[str, LocalFile], ...]  # (canonical split, file)

    def file_for(self, split: str) -> LocalFile | None:
        return dict(self.files).get(split)

    def files_for(self, split: str) -> tuple[LocalFile, ...]:
        """Every layout a split may be in (e.g. our TSV, then the canonical CSV), in the
        order they are looked for."""
        return tuple(f for s, f in self.files if s == split)


@dataclasses.dataclass(frozen=True)
class HFLayout:
    """Where a task lives in HF `datasets`: `load_dataset(id, config)`, its text and label
    fields, and (canonical split, HF split) pairs."""

    id: str
    config: str | None
    text_fields: tuple[str, ...]
    label_field: str
    splits: tuple[tuple[str, str], ...]

    def split_for(self, split: str) -> str | None:
        return dict(self.splits).get(split)


@dataclasses.dataclass(frozen=True)
class TfdsLayout:
    """Where a task lives in `tensorflow-datasets` (`tfds.data_source(name, split=...)`)."""

    name: str
    text_fields: tuple[str, ...]
    label_field: str
    splits: tuple[tuple[str, str], ...]

    def split_for(self, split: str) -> str | None:
        return dict(self.splits).get(split)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Everything jaxit needs to know about a task (hashable: usable as a jit static arg).

    name:          canonical registry name ("sst2").
    text_fields:   canonical field name(s): one for single sentences, two for pairs.
    label_names:   class names in label-id order; None for regression.
    metrics:       metric names understood by `jaxit.metrics` (primary first).
    splits:        canonical split names this task knows (sources may lack some).
    label_range:   (low, high) of the regression target (STS-B 0-5, SICK 1-5), else None.
    local/hf/tfds: per-source layouts (None where the source does not offer the task).
    aliases:       other accepted names (matched case-insensitively, ignoring "-", "_").
    split_aliases: (alias, canonical split) pairs, e.g. ("validation", "dev").
    """

    name: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...] | None
    metrics: tuple[str, ...]
    splits: tuple[str, ...]
    label_range: tuple[float, float] | None = None
    local: LocalLayout | None = None
    hf: HFLayout | None = None
    tfds: TfdsLayout | None = None
    aliases: tuple[str, ...] = ()
    split_aliases: tuple[tuple[str, str], ...] = ()
    description: str = ""

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        """Number of classes; 1 for regression (one output)."""
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return len(self.text_fields) == 2

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def glue_dir(self) -> str | None:
        """The task's folder name in the local data dir (e.g. "SST-2")."""
        return self.local.dir if self.local else None

    def resolve_split(self, split: str) -> str:
        """The canonical split for `split` (accepts aliases such as "validation" or "val");
        raises ValueError naming the task's splits if unknown."""
        s = split.strip().lower()
        if s in self.splits:
            return s
        alias = dict(self.split_aliases).get(s) or dict(_COMMON_SPLIT_ALIASES).get(s)
        if alias in self.splits:
            return alias
        raise ValueError(f"task {self.name!r} has no split {split!r}; known splits: "
                         f"{', '.join(self.splits)}")


_COMMON_SPLIT_ALIASES = (("validation", "dev"), ("val", "dev"), ("valid", "dev"),
                         ("eval", "dev"), ("training", "train"))

_GLUE_HF = "nyu-mll/glue"
_STD_HF_SPLITS = (("train", "train"), ("dev", "validation"), ("test", "test"))
_TRAIN_TEST = (("train", "train"), ("test", "test"))


def _tsv(name: str, text: tuple[Column, ...], label: Column | None, *, header: bool = True,
         values: tuple[str, ...] | None = None, num_columns: int | None = None,
         guid: Column | None = None) -> LocalFile:
    return LocalFile((name,), "tsv", header, text, label, values, num_columns, guid)


def _news_csv(name: str, n_classes: int) -> LocalFile:
    """The char-CNN CSV (Zhang et al. 2015) of AG News / DBpedia: class (1-based), title,
    text; text = title + " " + text, as the papers (and HF `ag_news`) do."""
    return LocalFile((name,), "news_csv", False, (1, 2), 0,
                     tuple(str(i) for i in range(1, n_classes + 1)), 3)


def _glue(name, config, dir, text_cols, label_col, label_names, metrics, *, label_values=None,
          hf_text=None, label_range=None, aliases=(), test_text=None, header=True,
          num_columns=None, description=""):
    """A GLUE task with train/dev/test TSVs, the HF `glue` config and tfds `glue/<config>`."""
    hf_text = hf_text or (("sentence",) if len(text_cols) == 1 else ("sentence1", "sentence2"))
    guid = "index" if header else None  # used when the header has it, else the row number
    files = (
        ("train", _tsv("train.tsv", text_cols, label_col, header=header, values=label_values,
                       num_columns=num_columns, guid=guid)),
        ("dev", _tsv("dev.tsv", text_cols, label_col, header=header, values=label_values,
                     num_columns=num_columns, guid=guid)),
        ("test", _tsv("test.tsv", test_text or text_cols, None, guid="index")),
    )
    return TaskSpec(
        name=name, text_fields=hf_text, label_names=label_names, metrics=metrics,
        splits=("train", "dev", "test"), label_range=label_range,
        local=LocalLayout(dir, files),
        hf=HFLayout(_GLUE_HF, config, hf_text, "label", _STD_HF_SPLITS),
        tfds=TfdsLayout(f"glue/{config}", hf_text, "label",
                        (("train", "train"), ("dev", "validation"), ("test", "test"))),
        aliases=aliases, description=description)


_BINARY = ("0", "1")

_TASKS: tuple[TaskSpec, ...] = (
    _glue("cola", "cola", "CoLA", (3,), 1, ("unacceptable", "acceptable"), ("mcc", "accuracy"),
          label_values=_BINARY, header=False, num_columns=4, test_text=("sentence",),
          description="CoLA: grammatical acceptability (no header: source, label, "
                      "original label, sentence)"),
    _glue("sst2", "sst2", "SST-2", ("sentence",), "label", ("negative", "positive"),
          ("accuracy",), label_values=_BINARY, aliases=("sst-2", "sst"),
          description="SST-2: binary sentiment of movie-review phrases"),
    _glue("mrpc", "mrpc", "MRPC", ("#1 String", "#2 String"), "Quality",
          ("not_equivalent", "equivalent"), ("f1", "accuracy"), label_values=_BINARY,
          description="MRPC: paraphrase pairs (files start with a UTF-8 BOM)"),
    _glue("stsb", "stsb", "STS-B", ("sentence1", "sentence2"), "score", None,
          ("pearson", "spearman"), label_range=(0.0, 5.0), aliases=("sts-b", "sts"),
          description="STS-B: sentence similarity, regression 0-5"),
    _glue("qqp", "qqp", "QQP", ("question1", "question2"), "is_duplicate",
          ("not_duplicate", "duplicate"), ("f1", "accuracy"), label_values=_BINARY,
          hf_text=("question1", "question2"), description="QQP: duplicate Quora questions"),
    TaskSpec(
        name="mnli", text_fields=("premise", "hypothesis"),
        label_names=("entailment", "neutral", "contradiction"), metrics=("accuracy",),
        splits=("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched",
                "dev_matched_subset"),
        local=LocalLayout("MNLI", (
            ("train", _tsv("train.tsv", ("sentence1", "sentence2"), "gold_label", guid="index")),
            ("dev_matched", _tsv("dev_matched.tsv", ("sentence1", "sentence2"), "gold_label",
                                 guid="index")),
            ("dev_mismatched", _tsv("dev_mismatched.tsv", ("sentence1", "sentence2"),
                                    "gold_label", guid="index")),
            ("test_matched", _tsv("test_matched.tsv", ("sentence1", "sentence2"), None,
                                  guid="index")),
            ("test_mismatched", _tsv("test_mismatched.tsv", ("sentence1", "sentence2"), None,
                                     guid="index")),
            # TextFooler's 1,000-pair subset of dev_matched: label, premise, hypothesis.
            ("dev_matched_subset", _tsv("dev_matched_subset1000_textfooler.tsv", (1, 2), 0,
                                        header=False, num_columns=3)),
        )),
        hf=HFLayout(_GLUE_HF, "mnli", ("premise", "hypothesis"), "label", (
            ("train", "train"), ("dev_matched", "validation_matched"),
            ("dev_mismatched", "validation_mismatched"), ("test_matched", "test_matched"),
            ("test_mismatched", "test_mismatched"))),
        tfds=TfdsLayout("glue/mnli", ("premise", "hypothesis"), "label", (
            ("train", "train"), ("dev_matched", "validation_matched"),
            ("dev_mismatched", "validation_mismatched"), ("test_matched", "test_matched"),
            ("test_mismatched", "test_mismatched"))),
        aliases=("multinli",),
        split_aliases=(("dev", "dev_matched"), ("validation", "dev_matched"),
                       ("validation_matched", "dev_matched"),
                       ("validation_mismatched", "dev_mismatched"),
                       ("test", "test_matched"), ("textfooler", "dev_matched_subset"),
                       ("dev_matched_subset1000", "dev_matched_subset")),
        description="MultiNLI: 3-way entailment; local 'dev_matched_subset' is TextFooler's "
                    "tokenized 1,000-pair subset of dev_matched"),
    _glue("qnli", "qnli", "QNLI", ("question", "sentence"), "label",
          ("entailment", "not_entailment"), ("accuracy",), hf_text=("question", "sentence"),
          description="QNLI: does the sentence answer the question"),
    _glue("rte", "rte", "RTE", ("sentence1", "sentence2"), "label",
          ("entailment", "not_entailment"), ("accuracy",),
          description="RTE: 2-way entailment"),
    _glue("wnli", "wnli", "WNLI", ("sentence1", "sentence2"), "label",
          ("not_entailment", "entailment"), ("accuracy",), label_values=_BINARY,
          description="WNLI: Winograd entailment"),
    TaskSpec(
        name="sick", text_fields=("sentence_A", "sentence_B"), label_names=None,
        metrics=("pearson", "spearman"), splits=("train", "dev", "test"),
        label_range=(1.0, 5.0),
        local=LocalLayout("SICK", (
            ("train", LocalFile(("train.tsv", "SICK_train.txt"), "tsv", True,
                                ("sentence_A", "sentence_B"), "relatedness_score",
                                guid_column="pair_ID")),
            ("dev", LocalFile(("dev.tsv", "SICK_trial.txt"), "tsv", True,
                              ("sentence_A", "sentence_B"), "relatedness_score",
                              guid_column="pair_ID")),
            ("test", LocalFile(("test.tsv", "SICK_test_annotated.txt"), "tsv", True,
                               ("sentence_A", "sentence_B"), "relatedness_score",
                               guid_column="pair_ID")),
        )),
        hf=HFLayout("RobZamp/sick", None, ("sentence_A", "sentence_B"), "relatedness_score",
                    _STD_HF_SPLITS),
        description="SICK relatedness (regression 1-5); local files are SemEval-2014 task 1's "
                    "SICK_{train,trial,test_annotated}.txt"),
    TaskSpec(
        name="imdb", text_fields=("text",), label_names=("neg", "pos"), metrics=("accuracy",),
        splits=("train", "test", "test_subset"),
        local=LocalLayout("IMDB", (
            ("train", _tsv("train.tsv", ("sentence",), "label", values=_BINARY)),
            ("test", _tsv("test.tsv", ("sentence",), "label", values=_BINARY)),
            ("test_subset", _tsv("test_subset.tsv", ("sentence",), "label", values=_BINARY,
                                 guid="source_file")),
        )),
        hf=HFLayout("stanfordnlp/imdb", None, ("text",), "label", _TRAIN_TEST),
        tfds=TfdsLayout("imdb_reviews", ("text",), "label", _TRAIN_TEST),
        aliases=("imdb_reviews",),
        description="IMDB movie reviews, binary sentiment; local TSVs: sentence, label[, ...]"),
    TaskSpec(
        name="ag_news", text_fields=("text",),
        label_names=("World", "Sports", "Business", "Sci/Tech"), metrics=("accuracy",),
        splits=("train", "test"),
        local=LocalLayout("AG_News", (
            ("train", _tsv("train.tsv", ("text",), "label", values=("0", "1", "2", "3"))),
            ("train", _news_csv("train.csv", 4)),
            ("test", _tsv("test.tsv", ("text",), "label", values=("0", "1", "2", "3"))),
            ("test", _news_csv("test.csv", 4)),
        )),
        hf=HFLayout("fancyzhx/ag_news", None, ("text",), "label", _TRAIN_TEST),
        tfds=TfdsLayout("ag_news_subset", ("description",), "label", _TRAIN_TEST),
        aliases=("ag-news", "agnews"),
        description="AG News topic classification (4 classes); local TSVs: text, label (0-3), "
                    "or the distributed train/test.csv: class 1-4, title, description"),
    TaskSpec(
        name="dbpedia", text_fields=("content",),
        label_names=("Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder",
                     "MeanOfTransportation", "Building", "NaturalPlace", "Village", "Animal",
                     "Plant", "Album", "Film", "WrittenWork"),
        metrics=("accuracy",), splits=("train", "test"),
        local=LocalLayout("DBpedia", (
            ("train", _tsv("train.tsv", ("content",), "label",
                           values=tuple(str(i) for i in range(14)))),
            ("train", _news_csv("train.csv", 14)),
            ("test", _tsv("test.tsv", ("content",), "label",
                          values=tuple(str(i) for i in range(14)))),
            ("test", _news_csv("test.csv", 14)),
        )),
        hf=HFLayout("fancyzhx/dbpedia_14", None, ("content",), "label", _TRAIN_TEST),
        aliases=("dbpedia_14", "dbpedia14"),
        description="DBpedia ontology classification (14 classes); local TSVs: content, label "
                    "(0-13), or the distributed train/test.csv: class 1-14, title, content"),
    TaskSpec(
        name="hatexplain", text_fields=("text",),
        label_names=("hatespeech", "normal", "offensive"), metrics=("macro_f1", "accuracy"),
        splits=("train", "dev", "test"),
        local=LocalLayout("HateXplain", (
            ("train", LocalFile(("train.jsonl",), "hatexplain")),
            ("dev", LocalFile(("val.jsonl",), "hatexplain")),
            ("test", LocalFile(("test.jsonl",), "hatexplain")),
        )),
        hf=HFLayout("Hate-speech-CNERG/hatexplain", None, ("post_tokens",), "annotators",
                    _STD_HF_SPLITS),
        description="HateXplain: text = ' '.join(post_tokens), label = the annotators' "
                    "majority; posts without a majority are dropped"),
    TaskSpec(
        name="eraser_movies", text_fields=("review",), label_names=("NEG", "POS"),
        metrics=("accuracy",), splits=("train", "dev", "test"),
        local=LocalLayout("ERASER-movies", (
            ("train", LocalFile(("train.jsonl",), "eraser")),
            ("dev", LocalFile(("val.jsonl",), "eraser")),
            ("test", LocalFile(("test.jsonl",), "eraser")),
        )),
        hf=HFLayout("eraser-benchmark/movie_rationales", None, ("review",), "label",
                    _STD_HF_SPLITS),
        tfds=TfdsLayout("movie_rationales", ("review",), "label", _STD_HF_SPLITS),
        aliases=("movies", "eraser-movies", "movie_rationales"),
        description="ERASER Movies: review sentiment with human evidence spans "
                    "(see load_rationales)"),
    TaskSpec(
        name="synthetic", text_fields=("text",), label_names=("negative", "positive"),
        metrics=("accuracy",), splits=("train", "dev"),
        description="jaxit's generated word-sentiment task for the offline demo "
                    "(jaxit.data.synthetic; source='synthetic')"),
)


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "").replace(" ", "")


_REGISTRY: dict[str, TaskSpec] = {}
for _t in _TASKS:
    for _n in (_t.name, *_t.aliases):
        _REGISTRY[_key(_n)] = _t


def task_names() -> tuple[str, ...]:
    """Canonical names of all registered tasks."""
    return tuple(t.name for t in _TASKS)


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The `TaskSpec` for `name` (case-insensitive; "SST-2", "sst_2", "sst2" all work).
    A `TaskSpec` is returned as is. Raises ValueError listing the known tasks."""
    if isinstance(name, TaskSpec):
        return name
    spec = _REGISTRY.get(_key(str(name)))
    if spec is None:
        from jaxit.errors import UnknownNameError, did_you_mean

        raise UnknownNameError(f"unknown task {name!r}{did_you_mean(name, task_names())}; known "
                               f"tasks: {', '.join(task_names())} "
                               "(or custom: your own files, data.train_file=...)")
    return spec


def register_task(spec: TaskSpec) -> None:
    """Adds (or replaces) a task, under its name and aliases."""
    global _TASKS
    _TASKS = tuple(t for t in _TASKS if t.name != spec.name) + (spec,)
    for n in (spec.name, *spec.aliases):
        _REGISTRY[_key(n)] = spec
