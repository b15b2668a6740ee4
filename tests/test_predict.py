"""`jaxit predict` and `load_predictor` on a tiny trained multi-exit run: parity with the
run's own eval outputs, every input format, input order kept, and every bad input's message."""

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest

from jaxit.configs import tiny_config
from jaxit.data import get_task
from jaxit.data.text_inputs import InputError, parse_rows
from jaxit.inference.predictor import Predictor, load_predictor
from jaxit.inference.trained_run import RunError, load_trained_run
from tests.test_cli import jaxit


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from jaxit.train.loop import train

    c = tiny_config()
    c.method.name = "berxit"
    c.train.num_steps = 24
    wd = tmp_path_factory.mktemp("predict") / "run"
    train(c, wd)
    return wd


@pytest.fixture(scope="module")
def dev(run_dir):
    """(texts, labels, eval logits [N, C]) of the run's dev split, from `jaxit eval`'s path."""
    from jaxit.configs import config_from_run
    from jaxit.train.evaluate import restore_params
    from jaxit.train.pipeline import load_split

    config = config_from_run(run_dir)
    setup, params = restore_params(config, run_dir, "best")
    logits = []
    for batch, valid in setup.eval_batches():
        out = np.asarray(setup.predict_fn(params, batch))
        logits.append(out[np.asarray(valid)])
    examples = load_split(config, setup.task, "dev", 0)
    return [e.text_a for e in examples], [e.label for e in examples], np.concatenate(logits)


def test_never_equals_eval_outputs(run_dir, dev):
    texts, labels, logits = dev
    pred = load_predictor(run_dir, policy="never")
    assert pred.static
    res = pred.predict(texts, labels=labels)
    probs = np.array([[r["probabilities"][n] for n in ("negative", "positive")]
                      for r in res.records])
    np.testing.assert_allclose(probs, np.asarray(jax.nn.softmax(logits, -1)), atol=2e-6)
    assert [r["index"] for r in res.records] == list(range(len(texts)))
    assert all(r["exit_layer"] == 2 and r["tokens_per_layer"] == [r["tokens"]] * 2
               for r in res.records)
    want = float((logits.argmax(-1) == np.asarray(labels)).mean())
    assert res.summary["accuracy"] == pytest.approx(want)
    assert res.summary["flops_speedup"] == pytest.approx(1.0)


def test_adaptive_equals_the_engine_and_counts_flops(run_dir, dev):
    texts, labels, _ = dev
    pred = load_predictor(run_dir, policy="confidence", threshold=0.6)
    res = pred.predict(texts, labels=labels)
    exits = np.array([r["exit_layer"] for r in res.records])
    assert set(exits.tolist()) <= {1, 2}
    full = load_predictor(run_dir, policy="never").predict(texts)
    speedup = (sum(r["flops"] for r in full.records) / sum(r["flops"] for r in res.records))
    assert res.summary["flops_speedup"] == pytest.approx(speedup, rel=1e-4)
    assert res.summary["avg_exit_layer"] == pytest.approx(exits.mean(), abs=1e-4)
    # an example that ran both layers has the full model's answer
    both = [i for i, e in enumerate(exits) if e == 2]
    for i in both[:10]:
        assert res.records[i]["label"] == full.records[i]["label"]


def test_default_policy_is_the_sweeps_operating_point(run_dir, tmp_path):
    unswept = load_predictor(run_dir)
    assert unswept.policy_description.startswith("ConfidencePolicy(threshold=0.9)")
    assert "unswept" in unswept.policy_description
    swept = tmp_path / "swept"
    shutil.copytree(run_dir, swept)
    (swept / "sweep").mkdir()
    (swept / "sweep" / "exits.json").write_text(json.dumps({"operating_points": {
        "confidence": {"threshold": 0.7, "score": 0.8, "flops_speedup": 1.3},
        "entropy": {"threshold": 0.2, "score": 0.8, "flops_speedup": 1.5}}}))
    p = load_predictor(swept)
    assert p.policy_description == "EntropyPolicy(threshold=0.2) (sweep operating point)"


def test_pairs_and_bad_rows_keep_their_place(run_dir):
    run = load_trained_run(run_dir)
    pairs = Predictor(dataclasses.replace(run, task=get_task("rte")), policy="never")
    recs = pairs(["one string", ("a good film", "it is great"), ("only one", ""),
                  ("a", "b", "c")])
    assert [r.get("error") for r in recs] == [
        "a pair task needs (text_a, text_b), got one string", None,
        "missing the second text of the pair", "3 texts; rte takes 2"]
    assert recs[1]["label"] in ("entailment", "not_entailment")
    single = load_predictor(run_dir, policy="never")
    recs = single(["", "a fine film", "   ", "word " * 100])
    assert [r.get("error") for r in recs] == ["empty text", None, "empty text", None]
    assert recs[3]["truncated"] and recs[3]["tokens"] == 32 and not recs[1]["truncated"]
    with pytest.raises(TypeError, match="strings or"):
        single([3])


def test_bad_runs_and_policies(run_dir, tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        load_trained_run(tmp_path / "nope")
    with pytest.raises(RunError, match="is not a jaxit run"):
        load_trained_run(tmp_path)
    with pytest.raises(RunError, match="no checkpoint at step 999"):
        load_trained_run(run_dir, 999)
    with pytest.raises(RunError, match="no learning-to-exit"):
        load_predictor(run_dir, policy="lte")
    with pytest.raises(RunError, match="needs a DACT run"):
        load_predictor(run_dir, policy="dact")
    with pytest.raises(RunError, match="drops no tokens"):
        load_predictor(run_dir, eta_scale=0.5)
    with pytest.raises(RunError, match="unknown policy"):
        load_predictor(run_dir, policy="fastest")


def test_parse_rows_formats():
    rows = parse_rows("a\tb\n\nc\n", "text", 2)
    assert rows[0].texts == ("a", "b") and rows[1].error == "empty line"
    assert rows[2].error.startswith("missing the second text")
    csv = 'text,label\n"good, very good",1\n,0\nbad\n'
    rows = parse_rows(csv, "csv", 1, ["text"], "label")
    assert rows[0].texts == ("good, very good",) and rows[0].label == "1"
    assert rows[1].error == "empty text" and rows[2].error == "1 columns; the header has 2"
    rows = parse_rows('{"t": "x", "y": 1}\n[1]\n{bad\n{"u": 1}\n', "jsonl", 1, ["t"], "y")
    assert rows[0].texts == ("x",) and rows[0].label == "1"
    assert [r.error.split(" (")[0] for r in rows[1:]] == ["not a JSON object", "not valid JSON",
                                                          "no field 't'"]
    with pytest.raises(InputError, match="no column 'sentence'"):
        parse_rows("text\nx\n", "tsv", 1, ["sentence"])
    with pytest.raises(InputError, match="must name 2 field"):
        parse_rows("a\tb\n", "tsv", 2, ["a"])


def _summary(path):
    return json.loads(path.read_text())


def test_cli_formats_order_and_stdin(run_dir, dev, tmp_path):
    texts, labels, logits = dev
    n = 40
    tsv = tmp_path / "dev.tsv"
    tsv.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in
                                             zip(texts[:n], labels[:n])))
    out, summ = tmp_path / "out.jsonl", tmp_path / "s.json"
    jaxit("predict", f"--workdir={run_dir}", f"--input={tsv}", f"--output={out}",
          "--label_field=label", "--policy=never", f"--summary={summ}")
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["index"] for r in recs] == list(range(n))
    want = np.asarray(jax.nn.softmax(logits[:n], -1))[:, 1]
    np.testing.assert_allclose([r["probabilities"]["positive"] for r in recs], want, atol=2e-6)
    s = _summary(summ)
    assert s["accuracy"] == pytest.approx(float((logits[:n].argmax(-1) == labels[:n]).mean()))
    # JSONL and plain text from stdin, with bad lines in place
    jl = tmp_path / "in.jsonl"
    jl.write_text("\n".join([json.dumps({"text": texts[0]}), "", "{oops",
                             json.dumps({"text": texts[1]})]) + "\n")
    p = jaxit("predict", f"--workdir={run_dir}", f"--input={jl}", "--policy=never")
    recs = [json.loads(x) for x in p.stdout.splitlines()]
    assert [r.get("error", "").split(" (")[0] for r in recs] == ["", "empty line",
                                                                "not valid JSON", ""]
    assert "2 not predicted" in p.stderr and "1 x empty line" in p.stderr
    proc = jaxit("predict", f"--workdir={run_dir}", "--input=-",
                 stdin=f"{texts[2]}\n\n{texts[3]}\n")
    recs = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(recs) == 3 and recs[1]["error"] == "empty line" and "label" in recs[2]
    assert "examples/s" in proc.stderr and "FLOPs speed-up" in proc.stderr


def test_cli_pairs_and_bad_inputs(run_dir, tmp_path, monkeypatch):
    pair_run = tmp_path / "pair_run"
    shutil.copytree(run_dir, pair_run)
    hp = json.loads((pair_run / "hparams.json").read_text())
    (pair_run / "hparams.json").write_text(json.dumps({**hp, "task": "rte"}))
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a good film\tit is great\nno second text\nbad\tworse\n")
    p = jaxit("predict", f"--workdir={pair_run}", f"--input={pairs}")
    recs = [json.loads(x) for x in p.stdout.splitlines()]
    assert len(recs) == 3 and "error" in recs[1] and recs[2]["label"] in ("entailment",
                                                                           "not_entailment")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("fine\ncaf\xe9 cr\xe8me\n".encode("latin-1"))
    cases = [  # through the command: one line, exit status 2, no traceback
        ([f"--workdir={run_dir}", f"--input={bad}"], "line 2 is not valid UTF-8"),
        ([f"--workdir={tmp_path}", f"--input={pairs}"], "is not a jaxit run"),
    ]
    for args, msg in cases:
        p = jaxit("predict", *args, check=False)
        assert p.returncode == 2, (args, p.stderr)
        assert msg in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    # the rest in-process: the command prints any of these error types the same way
    monkeypatch.setenv("JAXIT_CACHE_DIR", "off")  # no persistent cache in the test process
    from jaxit.cli import _user_errors
    from jaxit.predict_cli import run_predict

    for kwargs, msg in [
        (dict(input_path=str(tmp_path / "missing.txt")), "does not exist"),
        (dict(input_path=str(pairs), fmt="tsv"), "no column 'text'"),
        (dict(input_path=str(pairs), policy="lte"), "learning-to-exit"),
    ]:
        with pytest.raises(_user_errors(), match=msg):
            run_predict(workdir=str(run_dir), **kwargs)


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory):
    """Tiny finetune and DACT runs (8 steps each)."""
    from jaxit.train.loop import train

    runs = {}
    for name in ("finetune", "dact"):
        c = tiny_config()
        c.method.name = name
        runs[name] = tmp_path_factory.mktemp("predict_" + name) / "run"
        train(c, runs[name])
    return runs


def test_every_method_family(other_runs, dev):
    texts = dev[0][:48]
    ft = load_predictor(other_runs["finetune"])
    assert ft.static and ft.policy_description == "never exit (default for an unswept run)"
    base = ft(texts)
    dact = load_predictor(other_runs["dact"])
    assert dact.policy_description.startswith("DACTPolicy(num_layers=2")
    recs = dact(texts)
    assert len(recs) == 48 and {r["exit_layer"] for r in recs} <= {1, 2}
    # token dropping: the fine-tuned run with contribution predictors added
    from jaxit.inference.adapler_runs import with_random_cps

    run = load_trained_run(other_runs["finetune"])
    heads = with_random_cps(run.heads, run.encoder.config, 0.5, seed=1, eta=1.0)
    cp_run = dataclasses.replace(run, params={**run.params, "heads": heads})
    off = Predictor(cp_run, eta_scale=0.0)
    assert off.static and off(texts) == base  # eta 0 keeps every token: the full model
    drop = Predictor(cp_run).predict(texts)
    kept = [r["tokens_per_layer"] for r in drop.records]
    assert all(k[0] <= r["tokens"] and k[1] <= k[0] for k, r in zip(kept, drop.records))
    assert drop.summary["kept_tokens"] < 0.95 and drop.summary["flops_speedup"] > 1.0
    total = sum(r["tokens"] * r["exit_layer"] for r in drop.records)
    assert drop.summary["kept_tokens"] == pytest.approx(sum(map(sum, kept)) / total, abs=1e-4)
