"""`jaxit data`: a run config's data as training will read it (the same task, files,
labels and tokenizer), summarised split by split (`jaxit.data.split_summary`)."""

from __future__ import annotations

from jaxit.data.custom import resolve_task
from jaxit.data.split_summary import format_split_summary, summarize_split
from jaxit.train.pipeline import load_run_tokenizer, load_split


def data_report(config, splits=None, first_rows: int = 3, tokenizer=True) -> list[dict]:
    """One summary per split (default: the config's train and eval splits, and a custom
    task's test split when it has a test file). tokenizer False skips token lengths."""
    task = resolve_task(config)
    d = config.data
    if not splits:
        splits = [d.train_split, d.eval_split]
        if task.name == "custom" and d.get("test_file"):
            splits.append("test")
    tok = load_run_tokenizer(config) if tokenizer else None
    out = []
    for split in splits:
        split = task.resolve_split(split)
        examples = load_split(config, task, split, 0)
        origin = d.get(f"{split}_file", "") if task.name == "custom" else d.source
        out.append(summarize_split(task, split, examples, tok, d.max_length, origin,
                                   first_rows))
    return out


def print_data_report(config, splits=None) -> list[dict]:
    """`data_report`, printed."""
    summaries = data_report(config, splits)
    print("\n\n".join(format_split_summary(s) for s in summaries))
    return summaries
