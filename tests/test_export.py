"""`jaxit export` of a MiniLM-based multi-exit run: Hugging Face PyTorch loads it and gives
our logits on real SST-2 dev sentences (mean-pooled heads through the exported remote code,
[CLS]-pooled heads through the stock BertForSequenceClassification), and the export loads
back into jaxit as the same adaptive model."""

import dataclasses
import json
import types

import numpy as np
import pytest

from jaxit.data.text_inputs import encode_texts
from jaxit.export import check_exportable, export_run, hf_config
from jaxit.inference.predictor import Predictor, load_predictor
from jaxit.inference.trained_run import RunError, load_trained_run
from tests.test_cli import jaxit

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory, minilm_dir, data_dir):
    from jaxit.configs import base_config
    from jaxit.train.loop import train

    c = base_config()
    c.model = str(minilm_dir)
    c.task = "sst2"
    c.data.data_dir = str(data_dir)
    c.data.max_train_examples = 64
    c.data.max_eval_examples = 32
    c.method.name = "berxit"
    c.method.pooling = "mean"
    c.train.batch_size = 16
    c.train.num_steps = 2
    c.train.learning_rate = 1e-3  # moves the heads off their initialisation in 2 steps
    c.progress = False
    wd = tmp_path_factory.mktemp("export") / "run"
    train(c, wd)
    return wd


@pytest.fixture(scope="module")
def sentences(data_dir):
    lines = (data_dir / "SST-2" / "dev.tsv").read_text().splitlines()[1:]
    return [ln.split("\t")[0] for ln in lines[:24]]


def _hf_logits(model, tok, sentences):
    enc = tok(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits.numpy()


def _ours(run, sentences):
    pred = Predictor(run, policy="never")
    ids, types_, _ = encode_texts(run.tokenizer, [(s,) for s in sentences], run.max_length)
    return pred.engine.run_static(list(zip(ids, types_))).outputs


def test_mean_pooled_export_matches_hf(minilm_run, sentences, tmp_path):
    out = tmp_path / "hf"
    p = jaxit("export", f"--workdir={minilm_run}", f"--out={out}")
    assert "trust_remote_code=True" in p.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_labels"] == 2 and cfg["id2label"] == {"0": "negative", "1": "positive"}
    assert cfg["problem_type"] == "single_label_classification"
    with pytest.raises(ValueError, match="trust_remote_code"):  # never a silent [CLS] model
        transformers.AutoModelForSequenceClassification.from_pretrained(out)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        out, trust_remote_code=True).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    run = load_trained_run(minilm_run)
    ours = _ours(run, sentences)
    theirs = _hf_logits(model, tok, sentences)
    np.testing.assert_allclose(theirs, ours, atol=1e-4)
    assert np.abs(ours[:, 0] - ours[:, 1]).std() > 1e-3  # the inputs give different logits
    pipe = transformers.pipeline("text-classification", model=str(out), tokenizer=tok,
                                 trust_remote_code=True)
    got = pipe(sentences[:4])
    recs = Predictor(run, policy="never")(sentences[:4])
    assert [g["label"] for g in got] == [r["label"] for r in recs]
    np.testing.assert_allclose([g["score"] for g in got],
                               [max(r["probabilities"].values()) for r in recs], atol=1e-4)
    # the export is a run: the same adaptive model, exits and all
    back = load_trained_run(out)
    assert back.source == "export" and set(back.heads) == set(run.heads)
    a = load_predictor(minilm_run, policy="confidence", threshold=0.55)(sentences)
    b = load_predictor(out, policy="confidence", threshold=0.55)(sentences)
    assert a == b
    p = jaxit("export", f"--workdir={minilm_run}", f"--out={out}", check=False)
    assert p.returncode == 2 and "not an empty directory" in p.stderr


def test_cls_pooled_export_is_stock_bert(minilm_run, sentences, tmp_path):
    run = load_trained_run(minilm_run)
    config = run.config.copy_and_resolve_references()
    config.method.pooling = "cls"
    cls_run = dataclasses.replace(run, config=config)
    out = export_run(cls_run, tmp_path / "hf_cls")
    assert not (out / "modeling_jaxit.py").exists()
    model = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(model).__name__ == "BertForSequenceClassification"
    tok = transformers.AutoTokenizer.from_pretrained(out)
    np.testing.assert_allclose(_hf_logits(model, tok, sentences), _ours(cls_run, sentences),
                               atol=1e-4)


def test_export_config_and_refusals(minilm_run):
    from jaxit.data import get_task

    run = load_trained_run(minilm_run)
    reg = hf_config(dataclasses.replace(run, task=get_task("stsb")))
    assert reg["problem_type"] == "regression" and reg["num_labels"] == 1
    distil = dataclasses.replace(run, encoder=types.SimpleNamespace(
        config=run.encoder.config.replace(model_type="distilbert")))
    with pytest.raises(RunError, match="distilbert"):
        check_exportable(distil)
