"""`jaxit lr-eval`: rationale evaluation of a trained AdapLeR run's contribution predictors
(seed 002 §5.3) on ERASER Movies and/or HateXplain, with CP heatmaps across layers.

    jaxit lr-eval --workdir RUN [--tasks eraser_movies,hatexplain] [--split test]
                  [--max_length 512] [--num_examples 0] [--heatmaps 6] [--out DIR]
                  [--eta 0.8] [--random_cps 0.1] [--baselines attention,rollout,saliency]

Writes to DIR (default RUN/lr_eval): rationales_<task>_<split>.json (per-layer mAP, FPR of
the kept set and of the 1/n level, TPR, kept-word fraction; settings), rationale_curves.png
(figure 5 style), and per task cp_heatmaps.html + cp_heatmap_<k>.png for the first
`--heatmaps` examples. Prints one markdown table per task. `--random_cps SCALE` evaluates a
run without CPs (e.g. the fine-tuned backbone) with random ones: a chance baseline.
`--baselines=attention,cls_attention,rollout,saliency [--baseline_run=FINETUNED_RUN]` adds
figure 5's comparison (`jaxit.interpret.rationale_baselines`): per layer, the mAP of each
baseline's soft scores and the FPR of its tokens at the uniform level 1/n, in
rationales_<task>_<split>_<name>.json, a table beside the CPs' and
rationale_curves_<task>.png.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxit.encoders.config import COMPUTE_DTYPES
from jaxit.inference.buckets import DEFAULT_BUCKETS
from jaxit.interpret.rationale_baselines import BASELINES, evaluate_baselines


def run_lr_eval(workdir, tasks=("eraser_movies", "hatexplain"), split: str = "test",
                out_dir=None, max_length: int = 512, num_examples: int = 0,
                heatmaps: int = 6, eta=None, random_cps: float | None = None,
                data_dir=None, which: str = "best", dtype: str | None = None,
                baselines: Sequence[str] = (), baseline_run=None) -> dict:
    """Evaluates the run in `workdir` on each task's rationales; returns {task: report}
    (`dtype`: the compute dtype, default the run's). `baselines` (names in
    `rationale_baselines.BASELINES`) adds figure 5's layer-wise raw attention, [CLS]
    attention, attention rollout and saliency of the fine-tuned model `baseline_run`
    (default: this run's own backbone), under "<task>/<name>"."""
    from jaxit import resources
    from jaxit.data.rationales import load_rationales
    from jaxit.encoders import load_tokenizer
    from jaxit.inference.token_drop import TokenDropRunner, load_adapler_run
    from jaxit.interpret.cp_heatmap import write_cp_heatmaps
    from jaxit.interpret.rationales import (
        encode_rationales,
        evaluate_rationales,
        plot_rationale_curves,
    )

    encoder, params, model_dir = load_adapler_run(workdir, which, random_cps=random_cps,
                                                  dtype=dtype)
    pooling = run_pooling(workdir)
    if model_dir is None:
        raise ValueError(f"{workdir} was trained with the synthetic tokenizer: lr-eval reads "
                         "real text (HateXplain, ERASER Movies)")
    tok = load_tokenizer(model_dir)
    max_length = min(int(max_length), encoder.config.max_position_embeddings)
    buckets = tuple(b for b in DEFAULT_BUCKETS if b < max_length) + (max_length,)
    num_outputs = int(np.shape(params["heads"]["final"]["out"]["kernel"])[-1])
    runner = TokenDropRunner(encoder, params, num_outputs, buckets=buckets, eta=eta,
                             pooling=pooling)
    base = None
    if baselines:
        src = baseline_run or workdir
        b_enc, b_params, _ = load_adapler_run(src, "best", random_cps=0.0, dtype=dtype)
        base = (b_enc, b_params, run_pooling(src), str(src))
    out = Path(out_dir) if out_dir else Path(workdir) / "lr_eval"
    out.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir or resources.data_dir()
    reports = {}
    for task in tasks:
        rats = load_rationales(task, split, data_dir)
        if num_examples:
            rats = rats[:num_examples]
        encoded = encode_rationales(tok, rats, max_length)
        report, results = evaluate_rationales(runner, encoded, keep_results=heatmaps > 0)
        report.settings.update({"task": task, "split": split, "max_length": max_length,
                                "workdir": str(workdir), "random_cps": random_cps})
        reports[task] = report
        (out / f"rationales_{task}_{split}.json").write_text(
            json.dumps(report.to_dict(), indent=2, default=float))
        if heatmaps:
            items = [{"tokens": [tok.id_to_token(int(i)) for i in e.input_ids],
                      "scores": r.scores, "kept": r.kept, "rationale": e.token_mask,
                      "title": f"{e.rationale.guid} (gold {e.rationale.label}, "
                               f"predicted {r.prediction})"}
                     for e, r in list(zip(encoded, results))[:heatmaps]]
            write_cp_heatmaps(items, out / task, title=f"AdapLeR contribution scores: {task}")
        print(f"\n## {task} ({split}): {report.num_examples} examples, "
              f"{100 * report.covered_word_fraction:.1f}% of words within {max_length} tokens, "
              f"η = {[round(float(e), 3) for e in runner.eta]}"
              + (f", accuracy {report.accuracy:.4f}" if report.accuracy is not None else ""))
        print(report.table())
        curves = {"CP": report}
        if base is not None:
            b_reports = evaluate_baselines(base[0], base[1], encoded, tuple(baselines),
                                           base[2], buckets)
            for name, rep in b_reports.items():
                rep.settings.update({"task": task, "split": split, "baseline_run": base[3]})
                reports[f"{task}/{name}"] = curves[name] = rep
                (out / f"rationales_{task}_{split}_{name}.json").write_text(
                    json.dumps(rep.to_dict(), indent=2, default=float))
            print(baseline_table(report, b_reports))
        plot_rationale_curves(curves, out / f"rationale_curves_{task}.png",
                              title=f"{task}: CP scores vs human rationales "
                                    f"({Path(workdir).name})")
    plot_rationale_curves({t: r for t, r in reports.items() if "/" not in t},
                          out / "rationale_curves.png",
                          title=f"CP scores vs human rationales ({Path(workdir).name})")
    print(f"\nwrote {out}")
    return reports


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="jaxit lr-eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True, help="a trained AdapLeR run")
    ap.add_argument("--checkpoint", default="best", help="best, latest or a step number")
    ap.add_argument("--tasks", default="eraser_movies,hatexplain")
    ap.add_argument("--split", default="test")
    ap.add_argument("--max_length", type=int, default=512)
    ap.add_argument("--num_examples", type=int, default=0, help="0 = all")
    ap.add_argument("--heatmaps", type=int, default=6, help="examples rendered per task")
    ap.add_argument("--out", default="", help="default: WORKDIR/lr_eval")
    ap.add_argument("--eta", default="", help="override η: one value or L comma-separated")
    ap.add_argument("--random_cps", type=float, default=None,
                    help="run without CPs: random CPs of this kernel scale (a baseline)")
    ap.add_argument("--dtype", default=None, choices=COMPUTE_DTYPES,
                    help="compute dtype (default: the run's config.dtype)")
    ap.add_argument("--baselines", default="",
                    help=f"figure 5's baselines, comma-separated: {','.join(BASELINES)}")
    ap.add_argument("--baseline_run", default="",
                    help="the fine-tuned run the baselines come from (default: --workdir)")
    args = ap.parse_args(argv)
    eta = None
    if args.eta:
        vals = [float(v) for v in args.eta.split(",")]
        eta = vals[0] if len(vals) == 1 else np.asarray(vals, np.float32)
    return run_lr_eval(args.workdir, tuple(t for t in args.tasks.split(",") if t), args.split,
                       args.out or None, args.max_length, args.num_examples, args.heatmaps, eta,
                       args.random_cps, which=args.checkpoint, dtype=args.dtype,
                       baselines=tuple(b for b in args.baselines.split(",") if b),
                       baseline_run=args.baseline_run or None)


def run_pooling(workdir) -> str:
    """The exit heads' pooling of a run ("cls" unless its hparams.json says otherwise)."""
    hp = Path(workdir) / "hparams.json"
    config = json.loads(hp.read_text()) if hp.is_file() else {}
    return str((config.get("method") or {}).get("pooling") or "cls")


def baseline_table(cp, baselines: dict) -> str:
    """Markdown: per layer, mAP and the uniform-level FPR of the CPs and of each baseline."""
    names = ["CP", *baselines]
    reps = [cp, *baselines.values()]
    head = "| layer ℓ | " + " | ".join(f"{n} mAP | {n} FPR(1/n)" for n in names) + " |"
    rows = [head, "|---|" + "---|" * (2 * len(names))]
    for l in range(cp.map.shape[0]):
        rows.append(f"| {l} | " + " | ".join(f"{r.map[l]:.3f} | {r.fpr_uniform[l]:.3f}"
                                             for r in reps) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
