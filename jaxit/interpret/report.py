"""`jaxit interpret`: every DACT-BERT interpretability output for a trained run, written
under <workdir>/interpret/:

    exit_histogram.json/.png      DACTPolicy exit layers on the dev split (batch-1 runner)
    attention_entropy.json/.png   per-layer (and per-head) attention entropy on the dev split
    pruning.json                  the model pruned to the deepest exit layer used, run again:
                                  are the predictions identical?
    attributions.html             IG heatmaps of the first N dev examples: the output a_L and
                                  every layer's halting value (one row per layer)
    attributions_<i>.png          the same heatmap per example
    attributions.json             tokens, per-token attributions, values, completeness gaps
    summary.json                  the headline numbers of all of the above
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxit.interpret.dact_analysis import (
    attention_entropy,
    check_dact_params,
    pruning_check,
    write_attention_entropy,
    write_exit_histogram,
)
from jaxit.interpret.integrated_gradients import make_dact_attributor
from jaxit.interpret.render import heatmap_html, html_page, write_heatmap_png


def token_strings(tokenizer, ids) -> list[str]:
    """Token strings of `ids` ("[id]" where the tokenizer has none)."""
    out = []
    for i in np.asarray(ids).reshape(-1):
        tok = tokenizer.id_to_token(int(i)) if tokenizer is not None else None
        out.append(tok if tok is not None else f"[{int(i)}]")
    return out


def _masked_dev_batches(setup):
    for batch, valid in setup.eval_batches():
        mask = np.asarray(batch.attention_mask) * np.asarray(valid, np.int32)[:, None]
        yield batch._replace(attention_mask=mask)


def _label_text(value, names) -> str:
    """A class id as its name (when the task has names), a regression value as a number."""
    if isinstance(value, float):
        return "unlabeled" if np.isnan(value) else f"{value:.3f}"
    if value is None or value < 0:
        return "unlabeled"
    return names[value] if names and value < len(names) else str(value)


def attribution_rows(att, exit_layer: int | None, class_name: str) -> tuple[np.ndarray, list]:
    """(rows [L + 1, n], labels): the output row, then one halting row per layer."""
    rows = np.concatenate([att.output[None], att.halting])
    labels = [f"output {class_name} = {att.output_value:.3f}"]
    for l, h in enumerate(att.halting_values, start=1):
        note = " (not run)" if exit_layer is not None and l > exit_layer else ""
        labels.append(f"halting h_{l} = {h:.3f}{note}")
    return rows, labels


GAP_WARNING = 0.05  # Sundararajan et al.: attributions should add up to within 5%


def relative_gap(delta: float, value: float, baseline_value: float) -> float:
    """|completeness gap| / |f(x) - f(baseline)| (the gap itself when f did not move)."""
    change = abs(value - baseline_value)
    return abs(delta) / change if change > 1e-6 else abs(delta)


def interpret_run(setup, params, out_dir, num_examples: int = 5, ig_steps: int = 300,
                  ig_rule: str = "trapezoid", baseline: str = "zeros",
                  tolerance: float = 0.1, chunk_size: int | None = 64) -> dict:
    """Writes the files listed in the module docstring for a DACT model on `setup`'s dev
    split and returns the summary. IG path points are evaluated `chunk_size` at a time."""
    from jaxit.sweep import dev_examples, method_pooling, setup_buckets

    check_dact_params(params)
    method, task = setup.method, setup.task
    encoder, is_regression = method.encoder, method.is_regression
    L = encoder.config.num_layers
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buckets = setup_buckets(setup)
    pooling = method_pooling(setup)
    value_range = (task.label_range[1] - task.label_range[0]) if task.label_range else 5.0

    examples = dev_examples(setup, len(setup.eval_data))
    prune = pruning_check(encoder, params, examples, is_regression, tolerance=tolerance,
                          value_range=value_range, buckets=buckets, pooling=pooling)
    full, pruned = prune.pop("_full"), prune.pop("_pruned")
    labels = np.asarray(setup.eval_data.labels)
    if not is_regression and (labels >= 0).all():
        prune["accuracy_full"] = float((full.predictions == labels).mean())
        prune["accuracy_pruned"] = float((pruned.predictions == labels).mean())
    (out / "pruning.json").write_text(json.dumps(prune, indent=2))
    title = f"{task.name} / {method.name}"
    hist = write_exit_histogram(full.exit_layers, L, out, title=f"{title}: DACT exit layers "
                                f"(n={len(examples)}, mean {full.exit_layers.mean():.2f})")
    ent = write_attention_entropy(
        attention_entropy(encoder, params["encoder"], _masked_dev_batches(setup)), out,
        title=f"{title}: attention entropy per layer")

    attribute = make_dact_attributor(encoder, is_regression, ig_steps, ig_rule, baseline,
                                     buckets, chunk_size, pooling)
    names = task.label_names
    sections, records = [], []
    for i, (ids, tt) in enumerate(examples[:num_examples]):
        att = attribute(params, ids, tt)
        tokens = token_strings(setup.tokenizer, ids)
        cls_name = "value" if is_regression else (
            f"p({names[att.target]})" if names else f"p(class {att.target})")
        rows, row_labels = attribution_rows(att, int(full.exit_layers[i]), cls_name)
        gaps = [relative_gap(att.output_delta, att.output_value, att.output_baseline)] + [
            relative_gap(d, v, b) for d, v, b in zip(att.halting_delta, att.halting_values,
                                                     att.halting_baseline)]
        label = labels[i].item() if labels.size > i else None
        head = (f"dev example {i}: label {_label_text(label, names)}, DACT exit layer "
                f"{int(full.exit_layers[i])} of {L}, answer "
                f"{_label_text(full.predictions[i].item(), names)}")
        if max(gaps) > GAP_WARNING:
            head += (f" [IG completeness gap {max(gaps):.0%} of the change: raise "
                     "--ig_steps]")
        sections.append(heatmap_html(tokens, rows, row_labels, title=head))
        write_heatmap_png(tokens, rows, out / f"attributions_{i}.png", row_labels, title=head)
        records.append({
            "index": i, "tokens": tokens, "label": label, "target": att.target,
            "max_relative_completeness_gap": max(gaps),
            "exit_layer": int(full.exit_layers[i]), "answer_a_L": att.answer.tolist(),
            "output": {"attributions": att.output.tolist(), "value": att.output_value,
                       "baseline_value": att.output_baseline,
                       "completeness_gap": att.output_delta},
            "halting": {"attributions": att.halting.tolist(),
                        "values": att.halting_values.tolist(),
                        "baseline_values": att.halting_baseline.tolist(),
                        "completeness_gap": att.halting_delta.tolist()}})
    if sections:
        (out / "attributions.html").write_text(html_page(
            sections, f"{title}: Integrated Gradients ({ig_steps} steps, {ig_rule}, "
            f"{baseline} baseline) of the output a_L and of every halting value h_l"))
    (out / "attributions.json").write_text(json.dumps(
        {"ig_steps": ig_steps, "rule": ig_rule, "baseline": baseline,
         "examples": records}, indent=2))
    rel = [r["max_relative_completeness_gap"] for r in records]
    summary = {"exit_histogram": hist, "attention_entropy_per_layer": ent["per_layer"],
               "pruning": prune, "num_attributed": len(records),
               "max_relative_completeness_gap": max(rel) if rel else None,
               "examples_over_gap_warning": [r["index"] for r in records
                                             if r["max_relative_completeness_gap"] > GAP_WARNING],
               "out_dir": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def interpret_checkpoint(config, workdir, which: str = "best", num_examples: int = 5,
                         ig_steps: int = 300) -> dict:
    """`jaxit interpret`: restore a trained DACT run and write <workdir>/interpret/."""
    from jaxit.train.evaluate import restore_params

    is_elbert = config.method.name == "elbert" or config.method.get("strategy") == "elbert"
    if config.method.name != "dact" and not is_elbert:
        raise ValueError(f"jaxit interpret analyses DACT and ELBERT runs; this config's method "
                         f"is {config.method.name!r} (pass --config.method.name=dact with the "
                         "overrides the run was trained with)")
    setup, params = restore_params(config, workdir, which)
    if is_elbert:
        return interpret_elbert(setup, params, Path(workdir), num_examples)
    return interpret_run(setup, params, Path(workdir) / "interpret", num_examples, ig_steps)


def interpret_elbert(setup, params, workdir: Path, num_examples: int = 5) -> dict:
    """ELBERT's decision-process figures (`elbert_view`) for the first dev examples, at the
    δ of the run's sweep operating point for the "elbert" rule (else δ 0.5)."""
    from jaxit.inference.policies import make_policy
    from jaxit.interpret.elbert_view import elbert_records, write_elbert_report
    from jaxit.sweep import dev_examples, method_pooling

    delta = 0.5
    sweep = workdir / "sweep" / "exits.json"
    if sweep.is_file():
        delta = json.loads(sweep.read_text()).get("operating_points", {}).get(
            "elbert", {}).get("threshold", delta)
    examples = dev_examples(setup, num_examples)
    tokens = [token_strings(setup.tokenizer, ids) for ids, _ in examples]
    records = elbert_records(setup.method.encoder, params, examples, tokens,
                             make_policy("elbert", delta), method_pooling(setup))
    out = workdir / "interpret"
    labels = np.asarray(setup.eval_data.labels)[:len(examples)]
    summary = write_elbert_report(records, out, setup.task.label_names, labels,
                                  f"{setup.task.name} / ELBERT (delta {delta}): cumulative "
                                  "[CLS] attention per layer (row = layer)")
    summary = {**summary, "delta": delta, "out_dir": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
