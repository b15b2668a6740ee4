"""The `jaxit` command end to end, as a user runs it (subprocesses)."""

import json
import os
import subprocess
import sys

import pytest

CONFIG = "experiments/configs/finetune.py:tiny"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def jaxit(*args, check=True, stdin=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", JAXIT_CACHE_DIR="off")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-m", "jaxit.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False,
                          input=stdin)
    if check and proc.returncode != 0:
        raise AssertionError(f"jaxit {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_help_and_unknown_command():
    assert "jaxit train" in jaxit("--help").stdout
    p = jaxit("frobnicate", check=False)
    assert p.returncode == 2 and "unknown command 'frobnicate'" in p.stderr


def test_train_requires_workdir(tmp_path):
    p = jaxit("train", f"--config={CONFIG}", check=False)
    assert p.returncode != 0 and "--workdir is required" in (p.stdout + p.stderr)


def test_train_eval_sweep_tiny(tmp_path):
    wd = str(tmp_path / "run")
    over = ["--config.method.name=berxit", "--config.train.num_steps=6", "--config.eval_every=2",
            "--config.keep_checkpoints=3"]
    out = jaxit("train", f"--config={CONFIG}", f"--workdir={wd}", *over).stdout
    result = json.loads(out[out.index("{"):])
    assert result["step"] == 6 and "accuracy" in result["dev"]
    ev = jaxit("eval", f"--config={CONFIG}", f"--workdir={wd}", *over).stdout
    _assert_eval_is_best_step(wd, json.loads(ev[ev.index("{"):])["accuracy"])
    # without --config, eval/sweep use the run's own saved config (hparams.json)
    sw = jaxit("sweep", f"--workdir={wd}", "--policies=confidence",
               "--wallclock_examples=5").stdout
    assert "operating_points" in sw
    report = json.loads((tmp_path / "run" / "sweep" / "exits.json").read_text())
    assert len(report["layerwise"]) == 2
    # the batched engine on all of dev agrees with the exits simulated from the trace
    op = report["operating_points"]["confidence"]
    assert op["batched"]["accuracy"] == pytest.approx(op["accuracy"])
    assert op["batched"]["avg_exit_layer"] == pytest.approx(op["avg_exit_layer"])
    assert op["batched"]["flops_speedup"] == pytest.approx(op["flops_speedup"], rel=1e-6)
    assert report["batched_static"]["compiles_after_warmup"] == 0
    assert (tmp_path / "run" / "sweep" / "tradeoff.png").stat().st_size > 1000
    # A config that does not match the checkpoint in the workdir is refused clearly.
    p = jaxit("train", f"--config={CONFIG}", f"--workdir={wd}", "--config.train.num_steps=6",
              check=False)
    assert p.returncode != 0 and "holds a checkpoint" in (p.stdout + p.stderr)


def _dev_rows(workdir):
    """(step, accuracy) of each dev evaluation in the run's metrics.jsonl."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [(r["step"], r["dev/accuracy"]) for r in rows if "dev/accuracy" in r]


def _assert_eval_is_best_step(workdir, eval_accuracy):
    """`jaxit eval` (best) scores the step with the highest dev accuracy, recomputed here
    independently of the eval code: each saved step's params through the batched engine
    (`load_predictor(..., checkpoint=step, policy="never")`) on the dev examples."""
    from jaxit.configs import config_from_run
    from jaxit.data.tasks import get_task
    from jaxit.inference.predictor import load_predictor
    from jaxit.train.pipeline import load_split

    config = config_from_run(workdir)
    task = get_task(config.task)
    dev = load_split(config, task, "dev", 0)
    texts, gold = [e.text_a for e in dev], [task.label_names[e.label] for e in dev]
    logged = dict(_dev_rows(workdir))
    acc = {}
    for step, logged_acc in logged.items():
        recs = load_predictor(workdir, checkpoint=step, policy="never")(texts)
        acc[step] = sum(r["label"] == g for r, g in zip(recs, gold)) / len(gold)
        assert acc[step] == pytest.approx(logged_acc)
    (kept,) = os.listdir(os.path.join(workdir, "best"))  # keep_best = 1
    assert acc[int(kept)] == max(acc.values())  # (test_train checks the choice among unequal)
    assert eval_accuracy == pytest.approx(acc[int(kept)])


def test_demo_quick(tmp_path):
    """What the demo claims, in its quick mode: accuracy well above chance, easy examples exit
    earlier than hard ones under DACT's halting, a report page with a row per operating point."""
    p = jaxit("demo", f"--workdir={tmp_path}", "--quick")
    assert "jaxit demo: early exit" in p.stdout
    demo = json.loads((tmp_path / "demo.json").read_text())
    assert set(demo) == {"berxit-alternating", "dact"}
    for r in demo.values():
        assert len(r["layerwise_accuracy"]) == 6
        assert r["full_model_accuracy"] >= 0.65  # chance is 0.5 (dev labels are ~50/50)
        assert set(r["layerwise_by_difficulty"]) == {"easy", "medium", "hard"}
        assert all(len(a) == 6 for a in r["layerwise_by_difficulty"].values())
        for op in r["operating_points"].values():
            assert op["flops_speedup"] >= 1.0 and op["batched_wall_speedup"] > 0
    halting = demo["dact"]["by_difficulty"]["dact"]
    assert halting["0"]["avg_exit_layer"] < halting["2"]["avg_exit_layer"]  # easy < hard
    assert demo["dact"]["operating_points"]["dact"]["score"] >= 0.7
    html = (tmp_path / "report.html").read_text()
    n_points = sum(len(r["operating_points"]) for r in demo.values())
    summary = html[html.index("<tbody>"):html.index("</tbody>")]
    assert summary.count("<tr>") == n_points
    assert html.count("data:image/png;base64,") >= 2  # every method's trade-off plot, inlined
    assert (tmp_path / "berxit-alternating" / "tradeoff.png").is_file()
