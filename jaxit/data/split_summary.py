"""What a user checks before a long run (`jaxit data`): a split's size, label distribution,
token lengths under the run's tokenizer, how much `max_length` truncates, and its first
rows as the model will see them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from jaxit.data.example import Example
from jaxit.data.tasks import TaskSpec

PERCENTILES = (50, 90, 95, 99)


def token_lengths(tokenizer: Tokenizer, examples: Sequence[Example]) -> np.ndarray:
    """Each example's token count with the special tokens, before any truncation."""
    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.no_padding()
    tok.no_truncation()
    inputs = [(e.text_a, e.text_b) if e.text_b is not None else e.text_a for e in examples]
    out = []
    for start in range(0, len(inputs), 2048):
        out += [len(enc.ids) for enc in tok.encode_batch(inputs[start:start + 2048])]
    return np.asarray(out, np.int64)


def summarize_split(task: TaskSpec, split: str, examples: Sequence[Example], tokenizer,
                    max_length: int, origin: str = "", first_rows: int = 3) -> dict:
    """A JSON-able summary of one split (see the module docstring)."""
    out: dict = {"task": task.name, "split": split, "origin": origin, "examples": len(examples)}
    labels = [e.label for e in examples if e.label is not None]
    out["unlabeled"] = len(examples) - len(labels)
    if task.is_regression:
        if labels:
            y = np.asarray(labels, np.float64)
            out["label_stats"] = {"min": float(y.min()), "mean": round(float(y.mean()), 4),
                                  "max": float(y.max())}
    else:
        counts = Counter(labels)
        out["labels"] = {name: counts.get(i, 0) for i, name in enumerate(task.label_names)}
    if tokenizer is not None and examples:
        n = token_lengths(tokenizer, examples)
        out["tokens"] = {**{f"p{p}": int(np.percentile(n, p)) for p in PERCENTILES},
                         "max": int(n.max()), "mean": round(float(n.mean()), 1)}
        out["max_length"] = max_length
        out["truncated"] = int((n > max_length).sum())
        out["truncated_fraction"] = round(float((n > max_length).mean()), 4)
    rows = []
    for e in examples[:first_rows]:
        row = {"guid": e.guid, "text": e.text_a}
        if e.text_b is not None:
            row["text_b"] = e.text_b
        if e.label is not None:
            row["label"] = e.label if task.is_regression else task.label_names[e.label]
        rows.append(row)
    out["first_rows"] = rows
    return out


def _short(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


def format_split_summary(s: dict) -> str:
    """`summarize_split`'s dict as a few readable lines."""
    lines = [f"{s['task']} {s['split']}: {s['examples']} examples"
             + (f" ({s['unlabeled']} unlabeled)" if s["unlabeled"] else "")
             + (f" from {s['origin']}" if s["origin"] else "")]
    if "labels" in s:
        total = max(sum(s["labels"].values()), 1)
        lines.append("  labels: " + ", ".join(f"{k} {v} ({100 * v / total:.1f}%)"
                                              for k, v in s["labels"].items()))
    if "label_stats" in s:
        st = s["label_stats"]
        lines.append(f"  label: min {st['min']:g}, mean {st['mean']:g}, max {st['max']:g}")
    if "tokens" in s:
        t = s["tokens"]
        lines.append("  tokens: " + ", ".join(f"{k} {v}" for k, v in t.items())
                     + f"; {s['truncated']} ({100 * s['truncated_fraction']:.1f}%) longer "
                       f"than max_length {s['max_length']} (truncated)")
    for r in s["first_rows"]:
        pair = f" || {_short(r['text_b'], 60)}" if "text_b" in r else ""
        lab = f"[{r['label']}] " if "label" in r else ""
        lines.append(f"  {r['guid']}: {lab}{_short(r['text'])}{pair}")
    return "\n".join(lines)
