"""Human rationales as word-level masks, for evaluating which tokens a model keeps or
attributes to (AdapLeR's AP / FPR against ERASER Movies and HateXplain rationales).

Words are the whitespace tokens of the example's text: `Example.text_a.split(" ")` for the
same guid from `load_examples` gives exactly `Rationale.words`. Map them to model tokens with
`jaxit.data.tokenize.encode_words`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxit.data.example import DataFormatError, parse_label, where
from jaxit.data.loaders import local_split_path
from jaxit.data.local_files import (
    eraser_doc_tokens,
    hatexplain_annotator_labels,
    iter_jsonl,
    majority_label,
)
from jaxit.data.tasks import TaskSpec, get_task


@dataclasses.dataclass(frozen=True, eq=False)
class Rationale:
    """One example's human rationale.

    guid:   the example's guid (as in `load_examples`).
    words:  the text's words (whitespace tokens).
    mask:   uint8 [len(words)]: 1 where a word is part of the rationale.
    label:  the gold label id.
    spans:  [start, end) word spans of the rationale (ERASER evidences as given; HateXplain:
            the runs of 1s in `mask`).
    """

    guid: str
    words: tuple[str, ...]
    mask: np.ndarray
    label: int | None
    spans: tuple[tuple[int, int], ...]


def _runs(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return tuple(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _eraser(path, task: TaskSpec) -> list[Rationale]:
    docs = path.parent / "docs"
    out = []
    for line, rec in iter_jsonl(path):
        at = where(path, line)
        docid = rec["annotation_id"]
        words = eraser_doc_tokens(docs, docid)
        mask = np.zeros(len(words), np.uint8)
        spans = []
        for group in rec.get("evidences", []):
            for ev in group:
                if ev.get("docid", docid) != docid:
                    continue
                s, e = int(ev["start_token"]), int(ev["end_token"])
                if not 0 <= s < e <= len(words):
                    raise DataFormatError(f"{at}: evidence span [{s}, {e}) is outside document "
                                          f"{docid} ({len(words)} tokens)")
                mask[s:e] = 1
                spans.append((s, e))
        out.append(Rationale(docid, tuple(words), mask,
                             parse_label(rec.get("classification"), task, None, at),
                             tuple(sorted(spans))))
    return out


def _hatexplain(path, task: TaskSpec) -> list[Rationale]:
    out = []
    for line, rec in iter_jsonl(path):
        at = where(path, line)
        maj = majority_label(hatexplain_annotator_labels(rec, at))
        rats = rec.get("rationales") or []
        if maj is None or not rats:
            continue
        words = [str(t) for t in rec["post_tokens"]]
        n = len(words)
        # One post (24439295_gab) has a rationale one longer than its tokens: cut/pad to n.
        m = np.zeros((len(rats), n), np.float32)
        for i, r in enumerate(rats):
            r = np.asarray(r[:n], np.float32)
            m[i, :len(r)] = r
        mask = (m.mean(0) >= 0.5).astype(np.uint8)
        out.append(Rationale(str(rec["post_id"]), tuple(words), mask,
                             parse_label(maj, task, None, at), _runs(mask)))
    return out


def load_rationales(task: str | TaskSpec, split: str, data_dir=None) -> list[Rationale]:
    """Word-level human rationales of a local split.

    eraser_movies: every annotation; mask = union of all evidence spans.
    hatexplain:    posts with a majority label and at least one annotator rationale (the
                   "normal" posts have none); mask = the annotators' average >= 0.5, as in
                   HateXplain's own evaluation. Rationales longer than the post are cut.
    """
    task = get_task(task)
    path = local_split_path(task, split, data_dir)
    if task.name == "eraser_movies":
        return _eraser(path, task)
    if task.name == "hatexplain":
        return _hatexplain(path, task)
    raise ValueError(f"task {task.name} has no rationales; tasks with rationales: "
                     f"eraser_movies, hatexplain")
