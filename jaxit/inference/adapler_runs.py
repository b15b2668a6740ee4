"""Loading a trained run for the token-dropping runners, with random contribution predictors
added to a run that has none (timing and chance baselines)."""

from __future__ import annotations

import jax
import numpy as np

from jaxit.encoders.transformer import make_encoder


def load_adapler_run(workdir, which: str | int = "best", random_cps: float | None = None,
                     seed: int = 0, dtype: str | None = None):
    """(encoder, params, model_dir) of a trained run, read without its config (model_dir:
    where its tokenizer is; None for the demo's synthetic tokenizer); `which`:
    "best", "latest" or a step number (e.g. the checkpoint that AdapLeR's model selection
    picked). The encoder config and tokenizer come from the run's hparams.json ("model",
    "tokenizer", "truncate_layers", "dtype"; without one, the default MiniLM); `dtype`
    overrides the run's compute dtype. An AdapLeR run is used as is. A run without CPs
    (e.g. `finetune`) needs `random_cps`: CPs with normal(random_cps) kernels and η = 0.25
    are added (timing and chance baselines only)."""
    import json
    from pathlib import Path

    from jaxit import resources
    from jaxit.train.init_from import load_run_params
    from jaxit.train.pipeline import load_run_tokenizer, run_encoder_config

    hp = Path(workdir) / "hparams.json"
    config = json.loads(hp.read_text()) if hp.is_file() else {}
    config.setdefault("model", str(resources.model_dir()))
    config.setdefault("tokenizer", None)
    if dtype is not None:
        config["dtype"] = dtype
    tokenizer = config["tokenizer"] or config["model"]
    model_dir = None if tokenizer == "synthetic" else Path(tokenizer)
    vocab = None
    if config["model"] == "random":  # the run's own random encoder: sized to its tokenizer
        import ml_collections

        vocab = load_run_tokenizer(ml_collections.ConfigDict(config)).get_vocab_size()
    try:
        cfg = run_encoder_config(config, vocab)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise FileNotFoundError(f"{workdir}: the run's model ({config['model']!r} in its "
                                f"hparams.json) cannot be read: {e}") from None
    params = jax.tree.map(np.asarray, load_run_params(workdir, which))
    heads = params.get("heads", {})
    if "final" not in heads:
        raise ValueError(f"{workdir}: params['heads'] has no 'final' exit head")
    if "cp" not in heads:
        if random_cps is None:
            raise ValueError(f"{workdir} is not an AdapLeR run (no contribution predictors); "
                             "pass random_cps=SCALE for random ones")
        params["heads"] = with_random_cps(heads, cfg, random_cps, seed)
    return make_encoder(cfg), params, model_dir


def with_random_cps(heads: dict, cfg, scale: float, seed: int = 0, eta: float = 0.25) -> dict:
    """`heads` plus random contribution predictors (normal(scale) kernels), η and θ = 1: a
    timing or chance baseline for token dropping on a run trained without CPs."""
    from jaxit.methods.adapler import init_cp

    cp = init_cp(jax.random.PRNGKey(seed), cfg.num_layers, cfg.hidden_size)
    cp = jax.tree.map(lambda x: np.asarray(x) * np.float32(scale / 0.02), cp)
    return {**heads, "cp": cp, "eta": np.full(cfg.num_layers, eta, np.float32),
            "theta": np.ones(cfg.num_layers, np.float32)}
