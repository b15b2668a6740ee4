"""`jaxit demo`: the README's main job, offline, a few minutes on 2 CPU cores.

Trains a small randomly initialised 6-layer encoder with an exit head on every layer on
the package's synthetic sentiment task (easy, medium and hard examples), with BERxiT's
Alternating strategy and with Joint training, then DACT-BERT's halting units starting from
the Alternating run (DACT's stage 2), and analyses every run on the dev split: layer-wise
accuracy, confidence/entropy/patience (and DACT's halting bound) threshold sweeps, FLOPs
speed-up, the wall-clock speed-ups of the batch-1 runner and of the batched engine, and how
deep easy vs hard examples go.
Writes `demo.json`, `tradeoff.png` per method, `report.html` (one self-contained page) and
prints a table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import ml_collections

from jaxit.configs import demo_config
from jaxit.interpret import report_page as page
from jaxit.sweep import run_sweep
from jaxit.train.loop import train
from jaxit.train.pipeline import build_setup

DIFFICULTY = {0: "easy", 1: "medium", 2: "hard"}
METHODS = {  # label -> (method config, run to start from, fraction of the training steps)
    "berxit-alternating": ({"name": "berxit", "strategy": "alternating"}, None, 1.0),
    "joint": ({"name": "early_exit", "strategy": "joint"}, None, 1.0),
    # DACT's stage 2 from the Alternating run: halting units trained with the ponder penalty
    "dact": ({"name": "dact", "tau": 5e-3, "stage1_fraction": 0.0}, "berxit-alternating", 0.3),
}
QUICK_METHODS = ("berxit-alternating", "dact")  # --quick: one early-exit run and DACT
BATCH_SIZE = 32  # the batched engine's (and the static batched model's) batch size


def run_demo(workdir: str | Path, quick: bool = False) -> dict:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results = {}
    reports = {}
    for label, (mcfg, start_from, fraction) in METHODS.items():
        if quick and label not in QUICK_METHODS:
            continue
        config = demo_config()
        config.method = ml_collections.ConfigDict(mcfg)
        config.progress = not quick
        if quick:  # enough steps for the easy examples and the first layers, not for hard ones
            config.data.synthetic_train = 25600
            config.data.synthetic_dev = 400
            config.train.num_epochs = 1.0
        config.train.num_epochs *= fraction
        if start_from:
            config.init_from = str((workdir / start_from).resolve())
        t0 = time.perf_counter()
        setup = build_setup(config)
        print(f"\n== {label}: training a {setup.method.encoder.config.num_layers}-layer random "
              f"encoder on {len(setup.train_data)} synthetic examples ({setup.num_steps} steps)")
        result, state = train(config, workdir / label, setup=setup)
        train_s = time.perf_counter() - t0
        report = run_sweep(setup, state.params, workdir / label, tolerance=0.01,
                           wallclock_examples=0 if quick else 300,
                           title=f"synthetic / {label}", batch_size=BATCH_SIZE)
        reports[label] = report
        results[label] = {"train_seconds": train_s, "steps": result["step"],
                          "dev": result["dev"], **_summary(report)}
    (workdir / "demo.json").write_text(json.dumps(results, indent=2, default=float))
    print(format_table(results))
    html = write_demo_page(workdir, results, reports)
    print(f"\nwrote {workdir / 'demo.json'}, {workdir}/<method>/tradeoff.png and {html}")
    return results


def write_demo_page(workdir: Path, results: dict, reports: dict) -> Path:
    """The demo's `report.html`: the summary table, exits by difficulty, and per method its
    sweep section (layer-wise scores, operating points, trade-off plot)."""
    cols = ("method", "policy", "threshold", "accuracy", "full acc", "avg exit", "FLOPs ×",
            "wall × b=1", f"wall × b={BATCH_SIZE}", "wall/FLOPs")
    rows = [[m, pol, p["threshold"], p["score"], r["full_model_accuracy"], p["avg_exit_layer"],
             p["flops_speedup"], p.get("wall_speedup"), p.get("batched_wall_speedup"),
             p.get("batched_wall_over_flops")]
            for m, r in results.items() for pol, p in r["operating_points"].items()]
    diff = [[m, pol, *[r["by_difficulty"][pol].get(k, {}).get("avg_exit_layer")
                       for k in sorted(r["by_difficulty"][pol])]]
            for m, r in results.items() for pol in r["by_difficulty"]]
    levels = [DIFFICULTY.get(d, str(d)) for d in range(3)]
    summary = page.section_html("summary (dev split)", [
        page.table_html(cols, rows, caption="operating point per method and policy"),
        page.table_html(("method", "policy", *[f"avg exit: {x}" for x in levels]), diff,
                        caption="average exit layer by difficulty at the operating point")])
    sections = [summary] + [page.sweep_section(reports[m], workdir / m, m) for m in reports]
    return page.write_page(workdir / "report.html", "jaxit demo: adaptive inference on the "
                           "synthetic task", sections, intro=[page.NOTE_WALL])


def _summary(report: dict) -> dict:
    return {
        "layerwise_accuracy": report["layerwise"],
        "full_model_accuracy": report["full_model_score"],
        "operating_points": {
            k: {key: p.get(key) for key in ("threshold", "score", "avg_exit_layer",
                                            "flops_speedup")}
            | ({"wall_speedup": p["wallclock"]["wall_speedup"],
                "wall_over_flops": p["wallclock"]["wall_over_flops"]} if "wallclock" in p else {})
            | ({"batched_wall_speedup": p["batched"]["wall_speedup"],
                "batched_wall_over_flops": p["batched"]["wall_over_flops"]}
               if "batched" in p else {})
            for k, p in report["operating_points"].items()},
        "by_difficulty": report.get("by_difficulty", {}),
        "layerwise_by_difficulty": {DIFFICULTY.get(d, str(d)): accs for d, accs in
                                    report.get("layerwise_by_difficulty", {}).items()},
    }


def format_table(results: dict) -> str:
    lines = ["", ("jaxit demo: early exit and DACT halting on the synthetic task (dev set); operating point = "
                  "largest FLOPs speed-up within 1 point of the full model"), ""]
    hdr = (f"{'method':20s} {'policy':11s} {'thresh':>7s} {'acc':>6s} {'full acc':>8s} "
           f"{'avg exit':>8s} {'FLOPs x':>7s} {'wall x b=1':>10s} {'wall x b=32':>11s}")
    lines += [hdr, "-" * len(hdr)]
    for m, r in results.items():
        for pol, p in r["operating_points"].items():
            wall, batched = p.get("wall_speedup"), p.get("batched_wall_speedup")
            lines.append(f"{m:20s} {pol:11s} {p['threshold']:7.3g} {p['score']:6.3f} "
                         f"{r['full_model_accuracy']:8.3f} {p['avg_exit_layer']:8.2f} "
                         f"{p['flops_speedup']:7.2f} {'' if wall is None else f'{wall:10.2f}'} "
                         f"{'' if batched is None else f'{batched:11.2f}'}")
    lines += ["", ("wall x: the adaptive model's wall-clock speed-up over the static model, "
              "measured side by side: b=1 one example at a time (the papers' setting), b=32 "
              "the batched engine on the whole dev split against the static model batched "
              "the same way")]
    lines += ["", "average exit layer by difficulty (confidence policy):"]
    for m, r in results.items():
        rows = r["by_difficulty"].get("confidence", {})
        cells = ", ".join(f"{DIFFICULTY.get(int(d), d)} {v['avg_exit_layer']:.2f} "
                          f"(acc {v.get('accuracy', float('nan')):.3f})" for d, v in rows.items())
        lines.append(f"  {m:20s} {cells}")
    lines += ["", "layer-wise accuracy (every example forced to exit at layer l = 1, 2, ...):"]
    for m, r in results.items():
        curve = " ".join(f"{a:.3f}" for a in r["layerwise_accuracy"])
        lines.append(f"  {m:20s} {'all':6s} {curve}")
        for d, accs in r.get("layerwise_by_difficulty", {}).items():
            lines.append(f"  {'':20s} {d:6s} " + " ".join(f"{a:.3f}" for a in accs))
    return "\n".join(lines)
