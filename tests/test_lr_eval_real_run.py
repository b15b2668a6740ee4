"""`jaxit lr-eval` on a real AdapLeR run, nothing patched: a tiny random-encoder AdapLeR run
(the MiniLM tokenizer, so HateXplain tokenizes) trained on disk by the library's `train`,
then evaluated through `jaxit.interpret.lr_eval.main` with and without `--eta`.

The run's η (trained from 0.25) keeps every token of these short posts; `--eta 1,1000` must
reach the runner: CP 0 then drops the tokens below the uniform level 1/n, and CP 1 every
token but [CLS] (its threshold 1000/n is above any score), which the written reports show
(their "eta", kept-word fraction, FPR and TPR)."""

import json

import jax
import numpy as np
import pytest

from jaxit.configs import tiny_config

pytestmark = pytest.mark.standard_promotion  # optax's Adam bias correction in `train`

L = 2  # tiny_config's random encoder


@pytest.fixture(scope="module")
def adapler_run(minilm_dir, tmp_path_factory):
    """Phase 3 of AdapLeR (`train` with method adapler) on the synthetic task. The phase-2
    saliencies it reads are made here (random positive values per training token, stored
    with the library's own writer) instead of by a phase-1 run: lr-eval only needs a run
    with trained CPs, and a second training run would double the test's time."""
    from jaxit.data import get_task, tokenize_examples
    from jaxit.data.saliency_files import save_saliency
    from jaxit.train.loop import train
    from jaxit.train.pipeline import load_run_tokenizer, load_split

    root = tmp_path_factory.mktemp("lr_eval_run")
    c = tiny_config()  # model = "random": 2 layers, width 32
    c.tokenizer = str(minilm_dir)
    c.method.name = "adapler"
    c.method.saliency_dir = str(root / "sal")
    c.method.cp_lr_scale = 10.0
    c.data.synthetic_train = 32
    c.data.synthetic_dev = 16
    c.data.buckets = (32,)  # one shape: one compilation
    c.train.num_steps = 2
    c.eval_every = 0  # once, at the end: writes best/
    c.save_every = 100
    c.keep_checkpoints = 1
    c.keep_best = 1
    c.num_devices = 1  # not the 4 fake CPU devices of the test session: faster compiles

    task = get_task("synthetic")
    data = tokenize_examples(load_run_tokenizer(c), task, load_split(c, task, "train", 0),
                             c.data.max_length)
    rng = np.random.default_rng(0)
    save_saliency(root / "sal" / "train.npz", data.guids,
                  [rng.uniform(0.1, 1.0, int(n)).astype(np.float32) for n in data.lengths],
                  {"max_length": c.data.max_length})
    train(c, root / "run")
    return root / "run"


def _eval(run, out, *extra):
    from jaxit.interpret.lr_eval import main

    reports = main(["--workdir", str(run), "--tasks", "hatexplain", "--num_examples", "5",
                    "--max_length", "32", "--out", str(out), *extra])
    written = json.loads((out / "rationales_hatexplain_test.json").read_text())
    return reports["hatexplain"], written


def test_lr_eval_on_a_real_run_honours_eta(adapler_run, tmp_path):
    from jaxit.train.init_from import load_run_params

    trained_eta = np.asarray(jax.device_get(load_run_params(adapler_run, "best"))
                             ["heads"]["eta"], np.float64)
    assert trained_eta.shape == (L,)
    assert not np.allclose(trained_eta, 0.25)  # the speed optimizer moved η: a trained run

    # the run as trained: its own η, heatmaps and the curves written
    rep, base = _eval(adapler_run, tmp_path / "trained", "--heatmaps", "1")
    assert rep.num_examples == base["num_examples"] == 5
    assert base["task"] == "hatexplain" and base["workdir"] == str(adapler_run)
    np.testing.assert_allclose(base["eta"], trained_eta, rtol=1e-6)
    assert (tmp_path / "trained" / "rationale_curves.png").stat().st_size > 1000
    assert (tmp_path / "trained" / "hatexplain" / "cp_heatmaps.html").is_file()
    assert (tmp_path / "trained" / "hatexplain" / "cp_heatmap_0.png").is_file()
    for key in ("mAP", "FPR", "FPR_uniform", "TPR", "kept_word_fraction"):
        assert len(base[key]) == L, key
    assert base["kept_word_fraction"] == [1.0, 1.0]  # η ≈ 0.25 keeps every word here

    # --eta, one value per layer, reaches the runner
    rep, over = _eval(adapler_run, tmp_path / "eta", "--eta", "1,1000", "--heatmaps", "0")
    assert over["eta"] == [1.0, 1000.0]
    np.testing.assert_allclose(rep.kept_word_fraction, over["kept_word_fraction"])
    kept = over["kept_word_fraction"]
    assert 0.0 < kept[0] < 1.0  # CP 0 at η = 1: the words below the uniform level go
    assert kept[1] == 0.0  # CP 1 at η = 1000: only [CLS] runs through layer 2
    assert over["FPR"][0] < base["FPR"][0] and over["TPR"][0] < base["TPR"][0]
    assert over["FPR"][1] == 0.0 and over["TPR"][1] == 0.0
    # the CPs' scores before the first drop do not depend on η: same ranking, same mAP
    assert over["mAP"][0] == pytest.approx(base["mAP"][0])
    assert not (tmp_path / "eta" / "hatexplain").exists()  # --heatmaps 0


def test_lr_eval_baselines_beside_the_cps(adapler_run, tmp_path):
    """`--baselines` on ERASER Movies (labels 0/1, the run's two classes): every baseline's
    per-layer report is written next to the CPs', over the same examples; on HateXplain's
    three labels the saliency baseline refuses this two-class model in one line."""
    from jaxit.interpret.lr_eval import main

    out = tmp_path / "base"
    reports = main(["--workdir", str(adapler_run), "--tasks", "eraser_movies", "--num_examples",
                    "3", "--max_length", "32", "--out", str(out), "--heatmaps", "0",
                    "--baselines", "attention,rollout,saliency"])
    cp = reports["eraser_movies"]
    for name in ("attention", "rollout", "saliency"):
        rep = reports[f"eraser_movies/{name}"]
        written = json.loads((out / f"rationales_eraser_movies_test_{name}.json").read_text())
        assert written["baseline"] == name and written["num_examples"] == cp.num_examples == 3
        assert len(written["mAP"]) == L and all(0 <= v <= 1 for v in written["mAP"])
        assert rep.covered_word_fraction == pytest.approx(cp.covered_word_fraction)
    assert (out / "rationale_curves_eraser_movies.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="not classes"):
        main(["--workdir", str(adapler_run), "--tasks", "hatexplain", "--num_examples", "3",
              "--max_length", "32", "--out", str(tmp_path / "hx"), "--heatmaps", "0",
              "--baselines", "saliency"])
