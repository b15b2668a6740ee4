"""Dev accuracy and FLOPs speed-up of an AdapLeR run's checkpoints (soft mask at λ = 1e20,
i.e. exactly the tokens hard dropping keeps), and the authors' model selection: the fastest
checkpoint whose dev accuracy is within `--tolerance` of the fine-tuned model's.

    python experiments/real_data/adapler_eval.py --run=RUN [--finetuned=FT_RUN] [--tolerance=0.01]
        [--step=S --eta_scales=1.03,1.06]

For every checkpoint in RUN (best/ and checkpoints/): accuracy with reduction, FLOPs
speed-up (encoder FLOPs of the full model / of the kept tokens, `flops.encoder_flops`; also
with the CPs and the head counted), kept fraction per layer, and the same params without
reduction (η = 0). With --finetuned, the fine-tuned run's best accuracy is the reference.
Writes RUN/adapler_eval.json. With --step and --eta_scales, instead: a post-hoc sweep of
that checkpoint with η' = min(c·η, 1) per scale c (a trade-off curve around the learned
thresholds; the paper's operating point is c = 1), written to RUN/eta_sweep.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from jaxit.configs import config_from_run
from jaxit.interpret.saliency import checkpoint_scores, restore_step_params
from jaxit.methods.adapler import evaluate_soft_mask
from jaxit.train.pipeline import build_setup


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", required=True)
    p.add_argument("--finetuned", default="")
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument("--step", type=int, default=0)
    p.add_argument("--eta_scales", default="")
    a = p.parse_args()
    config = config_from_run(a.run)
    setup = build_setup(config)
    enc = setup.method.encoder
    if a.eta_scales:
        params = jax.device_put(restore_step_params(a.run, a.step))
        eta = np.asarray(params["heads"]["eta"])
        sweep = []
        for c in (float(x) for x in a.eta_scales.split(",")):
            r = evaluate_soft_mask(enc, params, setup.eval_batches(sort_by_length=True),
                                   eta=np.minimum(c * eta, 1.0))
            row = {"step": a.step, "eta_scale": c, "accuracy": r["accuracy"],
                   "flops_speedup": r["flops_speedup"],
                   "flops_speedup_with_cps": r["flops_speedup_with_cps"],
                   "kept_fraction": [round(float(x), 4) for x in r["kept_fraction"]]}
            sweep.append(row)
            print(json.dumps(row), flush=True)
        (Path(a.run) / "eta_sweep.json").write_text(json.dumps(sweep, indent=2))
        return
    rows = []
    for step in sorted(checkpoint_scores(a.run)):
        params = jax.device_put(restore_step_params(a.run, step))
        red = evaluate_soft_mask(enc, params, setup.eval_batches(sort_by_length=True))
        full = evaluate_soft_mask(enc, params, setup.eval_batches(sort_by_length=True), eta=0.0)
        row = {"step": step, "accuracy": red["accuracy"], "flops_speedup": red["flops_speedup"],
               "flops_speedup_with_cps": red["flops_speedup_with_cps"],
               "accuracy_no_reduction": full["accuracy"],
               "kept_fraction": [round(float(x), 4) for x in red["kept_fraction"]],
               "eta": np.asarray(params["heads"]["eta"]).round(4).tolist(),
               "theta": np.asarray(params["heads"]["theta"]).round(4).tolist()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    ref = None
    if a.finetuned:
        ft = json.loads((Path(a.finetuned) / "result.json").read_text())
        ref = float(ft["dev"]["accuracy"])
    base = ref if ref is not None else max(r["accuracy_no_reduction"] for r in rows)
    ok = [r for r in rows if r["accuracy"] >= base - a.tolerance]
    chosen = max(ok, key=lambda r: r["flops_speedup"]) if ok else None
    report = {"reference_accuracy": base, "tolerance": a.tolerance, "checkpoints": rows,
              "selected": chosen}
    (Path(a.run) / "adapler_eval.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({"reference_accuracy": base, "selected": chosen}, indent=2))


if __name__ == "__main__":
    main()
