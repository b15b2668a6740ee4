"""One trade-off plot and table from several runs' `jaxit sweep` reports.

    python experiments/real_data/compare.py --out runs/real/sst2_compare \
        --curve "Alternating+confidence=runs/real/sst2_alternating:confidence" \
        --curve "Joint+confidence=runs/real/sst2_joint:confidence" \
        --curve "Alternating+entropy (DeeBERT rule)=runs/real/sst2_alternating:entropy" \
        --points "DACT=runs/real/dact_sst2_tau*:dact"

A --curve is one run's threshold sweep for one policy; --points collects one operating point
per run (glob) — DACT's halting rule has no threshold, so its trade-off comes from tau.
Writes <out>.png and <out>.md (a markdown table: score, average exit layer, layers saved,
FLOPs speed-up, and the batch-1 wall-clock numbers where the sweep measured them).
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path


def read_report(run: str) -> dict:
    path = Path(run) / "sweep" / "exits.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `jaxit sweep --workdir={run}` first")
    return json.loads(path.read_text())


def parse(spec: str) -> tuple[str, str, str]:
    label, rest = spec.split("=", 1)
    run, policy = rest.rsplit(":", 1)
    return label, run, policy


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output path without extension")
    ap.add_argument("--curve", action="append", default=[], help="LABEL=RUN:POLICY")
    ap.add_argument("--points", action="append", default=[], help="LABEL=RUN_GLOB:POLICY")
    ap.add_argument("--tolerance", type=float, default=0.01)
    args = ap.parse_args(argv)

    curves, rows, full_scores = {}, [], []
    for spec in args.curve:
        label, run, policy = parse(spec)
        rep = read_report(run)
        curves[label] = rep["sweeps"][policy]
        full = rep["full_model_score"]
        full_scores.append(full)
        ok = [p for p in curves[label] if p["score"] >= full - args.tolerance]
        best = max(ok, key=lambda p: p["flops_speedup"])
        wall = rep.get("operating_points", {}).get(policy, {}).get("wallclock", {})
        rows.append((label, run, full, best, wall))
    for spec in args.points:
        label, pattern, policy = parse(spec)
        pts = []
        for run in sorted(g for g in glob.glob(pattern) if Path(g, "sweep").is_dir()):
            rep = read_report(run)
            if policy not in rep["sweeps"]:
                continue
            p = dict(rep["sweeps"][policy][0], run=run)
            pts.append(p)
            wall = rep.get("operating_points", {}).get(policy, {}).get("wallclock", {})
            rows.append((f"{label} ({Path(run).name})", run, rep["full_model_score"], p, wall))
        curves[label] = pts
    if not curves:
        raise SystemExit("nothing to plot: give --curve and/or --points")

    from jaxit.inference.evaluate_exits import plot_tradeoff

    plot_tradeoff(curves, f"{args.out}.png", max(full_scores) if full_scores else None,
                  title=Path(args.out).name)
    lines = [("| model / rule | full-depth score | operating point | score | avg exit layer | "
              "layers saved | FLOPs speed-up | wall speed-up (batch 1) | wall/FLOPs |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for label, _, full, p, wall in rows:
        L = len(p.get("exit_histogram", [])) or 6
        saved = 1 - p["avg_exit_layer"] / L
        lines.append(
            f"| {label} | {full:.4f} | {p['policy']} | {p['score']:.4f} | "
            f"{p['avg_exit_layer']:.2f} | {saved:.1%} | {p['flops_speedup']:.2f} | "
            + (f"{wall['wall_speedup']:.2f} | {wall['wall_over_flops']:.3f} |" if wall
               else "– | – |"))
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}.png and {args.out}.md")


if __name__ == "__main__":
    main()
