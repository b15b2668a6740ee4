"""`jaxit demo`: the README's main job, offline, a few minutes on 2 CPU cores.

Trains a small randomly initialised 6-layer encoder with an exit head on every layer on
the package's synthetic sentiment task (easy, medium and hard examples), with BERxiT's
Alternating strategy and with Joint training; then from the Alternating run DACT-BERT's
halting units (DACT's stage 2) and AdapLeR (its phase 2 saliencies, then phase 3), and from
the AdapLeR run exit heads on the frozen AdapLeR model (depth + width, recipe B). Every run
is analysed on the dev split: layer-wise accuracy, threshold sweeps (confidence, entropy,
patience, DACT's halting bound; for depth + width the 2-D sweep of exit threshold × η scale
with its exits-only and tokens-only axes — the tokens-only axis is the AdapLeR model
itself), FLOPs speed-up, the batched engine's measured wall-clock speed-up against the
static batched model, and how deep easy vs hard examples go.
Writes `demo.json`, `tradeoff.png` per method, `report.html` (one self-contained page) and
prints a table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import ml_collections

from jaxit.configs import demo_config
from jaxit.depth_width_sweep import sweep_depth_width
from jaxit.interpret import report_page as page
from jaxit.interpret.saliency import extract_saliencies
from jaxit.sweep import run_sweep
from jaxit.train.loop import train
from jaxit.train.pipeline import build_setup

DIFFICULTY = {0: "easy", 1: "medium", 2: "hard"}
METHODS = {  # label -> (method config, run to start from, fraction of the training steps)
    "berxit-alternating": ({"name": "berxit", "strategy": "alternating"}, None, 1.0),
    "joint": ({"name": "early_exit", "strategy": "joint"}, None, 1.0),
    # DACT's stage 2 from the Alternating run: halting units trained with the ponder penalty
    "dact": ({"name": "dact", "tau": 5e-3, "stage1_fraction": 0.0}, "berxit-alternating", 0.3),
    # AdapLeR's phase 3 from the Alternating run (phase 1), on its phase-2 saliencies;
    # CP-sized settings as experiments/real_data/adapler.sh (gamma, phi, speed lr, CP lr)
    "adapler": ({"name": "adapler", "gamma": 0.1, "phi": 1e-2, "speed_lr": 2e-3,
                 "cp_lr_scale": 10.0}, "berxit-alternating", 0.3),
    # depth + width, recipe B: exits trained on the frozen AdapLeR model
    "depth+width": ({"name": "depth_width", "strategy": "two_stage", "stage1_fraction": 0.0},
                    "adapler", 0.3),
}
FINE_TUNE_LR = 3e-4  # runs that start from a trained run (init_from): a gentler lr
TOKEN_BUCKETS = (4, 8, 12)  # depth + width: buckets the kept tokens can shrink into
ETA_SCALES = (0.5, 1.0, 1.5, 2.0)  # depth + width: the 2-D sweep's η scales (0 added)
NO_TABLE = ("adapler",)  # swept through the depth + width run's tokens-only axis
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
        if mcfg["name"] in ("adapler", "depth_width"):
            config.method.saliency_dir = str((workdir / "saliency").resolve())
        if mcfg["name"] == "adapler":  # phase 2: the fine-tuned run's saliencies
            config.train.learning_rate = FINE_TUNE_LR
            extract_saliencies(workdir / start_from, workdir / "saliency", top_k=1,
                               progress=False)
        if mcfg["name"] == "depth_width":
            config.data.buckets = TOKEN_BUCKETS  # its exits are fresh: the default lr
        t0 = time.perf_counter()
        setup = build_setup(config)
        print(f"\n== {label}: training a {setup.method.encoder.config.num_layers}-layer random "
              f"encoder on {len(setup.train_data)} synthetic examples ({setup.num_steps} steps)")
        result, state = train(config, workdir / label, setup=setup)
        train_s = time.perf_counter() - t0
        if label in NO_TABLE:
            continue
        if mcfg["name"] == "depth_width":
            report = sweep_depth_width(setup, state.params, workdir / label, "confidence",
                                       ETA_SCALES, 0.01, BATCH_SIZE)
        else:
            report = run_sweep(setup, state.params, workdir / label, tolerance=0.01,
                               wallclock_examples=0, title=f"synthetic / {label}",
                               batch_size=BATCH_SIZE)
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
    cols = ("method", "policy", "threshold", "η scale", "accuracy", "full acc", "avg exit",
            "kept tokens", "FLOPs ×", f"wall × b={BATCH_SIZE}", "wall/FLOPs")
    rows = [[m, pol, p["threshold"], p.get("eta_scale"), p["score"], r["full_model_accuracy"],
             p["avg_exit_layer"], p["kept_fraction"], p["flops_speedup"],
             p.get("batched_wall_speedup"), p.get("batched_wall_over_flops")]
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
            k: {key: p.get(key) for key in ("threshold", "eta_scale", "score", "avg_exit_layer",
                                            "flops_speedup")}
            | {"kept_fraction": p.get("kept_fraction", 1.0)}
            | ({"batched_wall_speedup": p["batched"]["wall_speedup"],
                "batched_wall_over_flops": p["batched"]["wall_over_flops"]}
               if "batched" in p else {})
            for k, p in report["operating_points"].items()},
        "by_difficulty": report.get("by_difficulty", {}),
        "layerwise_by_difficulty": {DIFFICULTY.get(d, str(d)): accs for d, accs in
                                    report.get("layerwise_by_difficulty", {}).items()},
    }


def format_table(results: dict) -> str:
    lines = ["", ("jaxit demo: early exit, DACT halting, AdapLeR token dropping and depth + width "
                  "on the synthetic task (dev set); operating point = largest FLOPs speed-up "
                  "within 1 point of the full model"), ""]
    hdr = (f"{'method':19s} {'policy':31s} {'thresh':>7s} {'eta x':>5s} {'acc':>6s} "
           f"{'full acc':>8s} {'avg exit':>8s} {'kept':>5s} {'FLOPs x':>7s} "
           f"{'wall x b=32':>11s}")
    lines += [hdr, "-" * len(hdr)]
    for m, r in results.items():
        for pol, p in r["operating_points"].items():
            t, e, batched = p["threshold"], p.get("eta_scale"), p.get("batched_wall_speedup")
            lines.append(f"{m:19s} {pol:31s} {'never' if t is None else f'{t:7.3g}':>7s} "
                         f"{'' if e is None else f'{e:5.2g}':>5s} {p['score']:6.3f} "
                         f"{r['full_model_accuracy']:8.3f} {p['avg_exit_layer']:8.2f} "
                         f"{p['kept_fraction']:5.2f} {p['flops_speedup']:7.2f} "
                         f"{'' if batched is None else f'{batched:11.2f}'}")
    lines += ["", ("kept: the fraction of tokens the layers that ran actually ran on. wall x b=32: "
                   "the batched engine's wall-clock speed-up on the whole dev split over the "
                   "static model batched the same way, measured side by side (`jaxit sweep` "
                   "also times batch 1, the papers' setting). tokens only (never exit) is the "
                   "AdapLeR model: depth + width trains exits on it frozen")]
    lines += ["", "average exit layer by difficulty (confidence policy):"]
    for m, r in results.items():
        rows = r["by_difficulty"].get("confidence", {})
        if not rows:
            continue
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
