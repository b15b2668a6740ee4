"""Issue #17 item 13: a tiny STS-B-shaped regression run (sentence pairs, a float score)
through `jaxit train`, `jaxit eval` and `jaxit sweep`, every number the commands report
recomputed here from the best checkpoint's own predictions (scipy's Pearson/Spearman).

The task is learnable by a tiny random encoder in 100 steps: each sentence has 5-7 words,
the score is the number of "good"s in the pair (0..5), so [CLS] only has to count one token.
The lengths vary, so code that sorts by length (eval, the engine) must keep rows aligned.
"""

import csv
import json

import numpy as np
import pytest
from scipy import stats

from jaxit.data.synthetic import NEUTRAL
from jaxit.inference.predictor import Predictor, load_predictor
from jaxit.train.writer import read_metrics
from tests.test_cli import CONFIG, jaxit

WORDS = (5, 7)  # per sentence: [CLS] a [SEP] b [SEP] <= 17 tokens, one 20-token bucket
LEARNED_PEARSON = 0.6  # chance is 0; this run reaches ~0.9 (seed 0)


def _write_pairs(path, n, seed):
    """(sentence1, sentence2, score) rows; score = count of "good" in both sentences."""
    rng = np.random.default_rng(seed)
    fillers = [w for w in NEUTRAL if w != "good"]
    rows = []
    for _ in range(n):
        k = int(rng.integers(0, 6))
        k1 = int(rng.integers(max(0, k - 3), min(k, 3) + 1))
        pair = []
        for kk in (k1, k - k1):
            words = list(rng.choice(fillers, int(rng.integers(WORDS[0], WORDS[1] + 1)) - kk))
            for _ in range(kk):
                words.insert(int(rng.integers(0, len(words) + 1)), "good")
            pair.append(" ".join(words))
        rows.append((pair[0], pair[1], float(k)))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence1", "sentence2", "score"])
        w.writerows([(a, b, f"{y:.1f}") for a, b, y in rows])
    return rows


def _pearson(records, gold):
    return float(stats.pearsonr([r["value"] for r in records], gold)[0])


def test_regression_train_eval_sweep(tmp_path):
    _write_pairs(tmp_path / "train.csv", 512, seed=0)
    dev = _write_pairs(tmp_path / "dev.csv", 128, seed=1)
    pairs, gold = [(a, b) for a, b, _ in dev], np.array([y for *_, y in dev])
    wd = tmp_path / "run"
    over = ["--config.task=custom", "--config.data.source=local",
            f"--config.data.train_file={tmp_path / 'train.csv'}",
            f"--config.data.dev_file={tmp_path / 'dev.csv'}",
            "--config.data.text_fields=sentence1,sentence2", "--config.data.label_field=score",
            "--config.data.regression=True", "--config.data.max_length=20",
            "--config.data.buckets=(20,)", "--config.random_encoder.num_layers=3",
            "--config.method.name=berxit", "--config.method.lte=True",
            "--config.train.num_steps=100", "--config.train.learning_rate=3e-3",
            "--config.eval_every=25", "--config.save_every=1000", "--config.log_every=50",
            "--config.keep_checkpoints=1"]
    out = jaxit("train", f"--config={CONFIG}", f"--workdir={wd}", *over).stdout
    result = json.loads(out[out.index("{"):])
    assert result["step"] == 100 and set(result["dev"]) == {"pearson", "spearman"}

    # eval (best) = the step with the highest logged dev pearson, recomputed from that
    # checkpoint's final-layer predictions on the dev file (the batched engine, not eval's
    # `method.predict`), with scipy
    ev = jaxit("eval", f"--workdir={wd}").stdout
    ev = json.loads(ev[ev.index("{"):])
    logged = {r["step"]: r["dev/pearson"] for r in read_metrics(wd) if "dev/pearson" in r}
    assert sorted(logged) == [25, 50, 75, 100]
    full = load_predictor(wd, checkpoint="best", policy="never")
    assert full.run.step == max(logged, key=logged.get)
    recs = full(pairs)
    assert all(r["exit_layer"] == 3 for r in recs)
    values = np.array([r["value"] for r in recs])
    pearson = float(stats.pearsonr(values, gold)[0])
    spearman = float(stats.spearmanr(values, gold)[0])
    assert ev["pearson"] == pytest.approx(pearson, abs=1e-5)
    assert ev["spearman"] == pytest.approx(spearman, abs=1e-5)
    assert logged[full.run.step] == pytest.approx(pearson, abs=1e-5)
    assert pearson > LEARNED_PEARSON, f"the model did not learn the count: pearson {pearson}"

    # sweep: regression exits (LTE's certainty, patience on |change| < delta) on the best
    # checkpoint; its full-model score is the final layer's pearson computed above
    # (no batch-1 or batched timing: their warm-up compiles would dominate this test)
    sw = jaxit("sweep", f"--workdir={wd}", "--policies=lte,patience", "--wallclock_examples=0",
               "--batch_size=0")
    assert "operating_points" in sw.stdout
    report = json.loads((wd / "sweep" / "exits.json").read_text())
    assert report["metric"] == "pearson" and report["num_examples"] == len(dev)
    assert report["full_model_score"] == pytest.approx(pearson, abs=1e-5)
    assert len(report["layerwise"]) == 3
    assert report["layerwise"][-1] == pytest.approx(pearson, abs=1e-5)
    first = Predictor(full.run, policy="fixed", threshold=1)(pairs)
    assert report["layerwise"][0] == pytest.approx(_pearson(first, gold), abs=1e-5)
    for name in ("lte", "patience"):
        avg = {round(p["avg_exit_layer"], 6) for p in report["sweeps"][name]}
        assert len(avg) > 1 and min(avg) < 3, (name, avg)  # some threshold exits early
    assert set(report["operating_points"]) == {"lte", "patience"}
    # each operating point, replayed by the predictor at its threshold: same score and exits
    for name, op in report["operating_points"].items():
        recs = Predictor(full.run, policy=name, threshold=op["threshold"])(pairs)
        assert op["score"] == pytest.approx(_pearson(recs, gold), abs=1e-5), name
        assert op["avg_exit_layer"] == pytest.approx(np.mean([r["exit_layer"] for r in recs]))
        assert op["score"] >= report["full_model_score"] - 0.01  # the sweep's tolerance
    lte = report["sweeps"]["lte"]
    early = [p for p in lte if p["avg_exit_layer"] < 1.5]
    assert early and all(p["flops_speedup"] > 1.5 for p in early)
