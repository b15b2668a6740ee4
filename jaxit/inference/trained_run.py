"""A trained run as `jaxit predict` and `load_predictor` see it: its task, tokenizer, encoder
and params, read from a run directory (`jaxit train`'s workdir) or from a directory written
by `jaxit export`, without loading any training data or optimizer state.

An exported directory is a Hugging Face sequence-classification checkpoint (config.json,
model.safetensors, tokenizer files) plus two jaxit files beside it:

- `jaxit_run.json`: {"format": 1, "config": the run's hparams, "step", "sweep": the
  operating points of its `jaxit sweep` (or null), "pooling", "heads": names of the heads
  in `jaxit_heads.safetensors`};
- `jaxit_heads.safetensors`: the heads Hugging Face has no place for, as flat
  "/"-joined param paths (e.g. `exits/pooler/kernel` [L-1, D, D], `halting/kernel`
  [L, D, 1], `lte/kernel`, `cp/hidden/kernel`, `eta` [L], `theta` [L]), in jaxit's layout.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

EXPORT_META = "jaxit_run.json"
EXPORT_HEADS = "jaxit_heads.safetensors"
EXPORT_FORMAT = 1


class RunError(ValueError):
    """A directory is not a usable jaxit run (named in the message)."""


@dataclasses.dataclass
class TrainedRun:
    """Everything inference needs from a trained run.

    config: the run's hparams (ml_collections); task: its TaskSpec; tokenizer: a
    `tokenizers.Tokenizer`; encoder: the `Encoder`; params: {"encoder", "heads"} (numpy);
    step: the checkpoint's step (None if unknown); sweep: `jaxit sweep`'s report
    (operating_points, full_model_score) or None; source: "run" or "export".
    """

    path: Path
    config: Any
    task: Any
    tokenizer: Any
    encoder: Any
    params: dict
    step: int | None
    sweep: dict | None
    source: str

    @property
    def is_regression(self) -> bool:
        return self.task.is_regression

    @property
    def num_outputs(self) -> int:
        return self.task.num_labels

    @property
    def num_layers(self) -> int:
        return self.encoder.config.num_layers

    @property
    def pooling(self) -> str:
        return str(self.config.method.get("pooling", None) or "cls")

    @property
    def max_length(self) -> int:
        return int(self.config.data.max_length)

    @property
    def buckets(self) -> tuple[int, ...]:
        from jaxit.train.pipeline import _buckets

        return _buckets(self.config)

    @property
    def heads(self) -> dict:
        return self.params["heads"]

    @property
    def method_name(self) -> str:
        return str(self.config.method.name)


def load_trained_run(path, checkpoint: str | int = "best",
                     dtype: str | None = None) -> TrainedRun:
    """The run in `path` (a `jaxit train` workdir or a `jaxit export` directory) at
    `checkpoint`: "best", "latest" or a step number (workdirs only), computing in `dtype`
    (None: the run's config.dtype). Raises RunError, with what is wrong, for a directory
    that is neither."""
    root = _run_dir(path)
    if (root / EXPORT_META).is_file():
        if str(checkpoint) not in ("best", "latest"):
            raise RunError(f"{path} is an exported run (one checkpoint): --checkpoint does not "
                           "apply")
        run = _load_export(root)
    else:
        run = _load_workdir(root, checkpoint)
    if dtype is not None and dtype != run.encoder.config.dtype:
        from jaxit.encoders import make_encoder

        run.encoder = make_encoder(run.encoder.config.replace(dtype=dtype))
    return run


def _run_dir(path) -> Path:
    """`path` as a Path, after checking it holds a workdir or an export (else RunError)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise RunError(f"{path} does not exist" if not root.exists() else
                       f"{path} is a file, not a run directory")
    if not ((root / EXPORT_META).is_file() or (root / "hparams.json").is_file()):
        raise RunError(f"{path} is not a jaxit run: it has no hparams.json (a `jaxit train` "
                       f"workdir) and no {EXPORT_META} (a `jaxit export` directory)")
    return root


def run_config(path):
    """The config (ml_collections) of the run in `path` without loading any weights: a
    workdir's hparams.json or an export's jaxit_run.json. RunError if it is neither."""
    import ml_collections

    root = _run_dir(path)
    if (root / EXPORT_META).is_file():
        return ml_collections.ConfigDict(json.loads((root / EXPORT_META).read_text())["config"])
    return ml_collections.ConfigDict(json.loads((root / "hparams.json").read_text()))


def _load_workdir(root: Path, checkpoint) -> TrainedRun:
    import jax

    from jaxit.configs import config_from_run
    from jaxit.train.init_from import load_run_params

    config = config_from_run(root)
    task, tokenizer, encoder = _model_parts(config, root)
    try:
        params = jax.tree.map(np.asarray, load_run_params(root, checkpoint))
    except FileNotFoundError as e:
        raise RunError(str(e)) from None
    _check_params(root, encoder, params)
    sweep = None
    sweep_file = root / "sweep" / "exits.json"
    if not sweep_file.is_file():  # a depth + width run's 2-D sweep
        sweep_file = root / "sweep" / "depth_width.json"
    if sweep_file.is_file():
        sweep = _sweep_summary(json.loads(sweep_file.read_text()))
    return TrainedRun(root, config, task, tokenizer, encoder, params, _step(root, checkpoint),
                      sweep, "run")


def _model_parts(config, root: Path):
    """(task, tokenizer, encoder) of a run's config; a missing model directory is a RunError."""
    from jaxit.data.custom import task_for_config
    from jaxit.encoders import make_encoder
    from jaxit.train.pipeline import load_run_tokenizer, run_encoder_config

    task = task_for_config(config)
    try:
        tokenizer = load_run_tokenizer(config)
        enc_cfg = run_encoder_config(config, tokenizer.get_vocab_size())
    except (FileNotFoundError, NotADirectoryError) as e:
        raise RunError(f"{root}: the run's model or tokenizer ({config.model!r} in its "
                       f"hparams.json) cannot be read: {e}. Run from the directory it was "
                       "trained in, or use a `jaxit export` directory (self-contained)") from None
    return task, tokenizer, make_encoder(enc_cfg)


def _check_params(root: Path, encoder, params: dict) -> None:
    heads = params.get("heads", {})
    if "final" not in heads:
        raise RunError(f"{root}: the checkpoint has no final head (params['heads']['final'])")
    n = np.shape(params["encoder"]["layers"]["qkv"]["kernel"])[0]
    if not encoder.config.shared_layers and n != encoder.config.num_layers:
        raise RunError(f"{root}: the checkpoint has {n} layers but the run's encoder config "
                       f"has {encoder.config.num_layers}")


def _step(root: Path, checkpoint) -> int | None:
    if isinstance(checkpoint, int) or str(checkpoint).isdigit():
        return int(checkpoint)
    folder = root / ("best" if checkpoint == "best" and (root / "best").is_dir()
                     else "checkpoints")
    if folder.name == "best":
        from jaxit.train.init_from import best_step

        step = best_step(root)
        if step is not None:
            return step
    steps = [int(d.name) for d in folder.iterdir() if d.name.isdigit()] if folder.is_dir() else []
    return max(steps) if steps else None


def _sweep_summary(report: dict) -> dict:
    """The parts of `jaxit sweep`'s exits.json that prediction uses. A depth + width sweep
    (depth_width.json) contributes its fastest operating point under its policy's name
    ("never" when that point never exits), with the η scale it was measured at."""
    keys = ("threshold", "score", "flops_speedup", "avg_exit_layer", "eta_scale")
    points = {name: {k: p[k] for k in keys if k in p}
              for name, p in report.get("operating_points", {}).items()}
    if "pareto" in report and points:
        best = max(points.values(), key=lambda p: p.get("flops_speedup", 0.0))
        points = {report["policy"] if best.get("threshold") is not None else "never": best}
    return {"full_model_score": report.get("full_model_score"), "metric": report.get("metric"),
            "operating_points": points}


def _load_export(root: Path) -> TrainedRun:
    import ml_collections
    from safetensors.numpy import load_file

    from jaxit.data.custom import task_for_config
    from jaxit.encoders import load_tokenizer, make_encoder
    from jaxit.encoders.config import config_from_hf_dict, with_precision
    from jaxit.encoders.weights import _read_state, params_from_state_dict

    meta = json.loads((root / EXPORT_META).read_text())
    if meta.get("format") != EXPORT_FORMAT:
        raise RunError(f"{root / EXPORT_META}: format {meta.get('format')!r} is not "
                       f"{EXPORT_FORMAT} (written by another jaxit version)")
    config = ml_collections.ConfigDict(meta["config"])
    hf = json.loads((root / "config.json").read_text())
    hf["model_type"] = meta["model_type"]
    enc_cfg = with_precision(config_from_hf_dict(hf), config)
    state = _read_state(root)
    encoder_params = params_from_state_dict(enc_cfg, state, strict=True)
    prefix = f"{enc_cfg.model_type}."
    final = final_head_from_hf(enc_cfg.model_type, {
        k.removeprefix(prefix): v for k, v in state.items()})
    heads: dict = {"final": final}
    extra = root / EXPORT_HEADS
    if extra.is_file():
        for key, value in load_file(str(extra)).items():
            _set_path(heads, key.split("/"), value)
    params = {"encoder": encoder_params, "heads": heads}
    _check_params(root, make_encoder(enc_cfg), params)
    return TrainedRun(root, config, task_for_config(config), load_tokenizer(root),
                      make_encoder(enc_cfg), params, meta.get("step"), meta.get("sweep"),
                      "export")


# The final head in Hugging Face's sequence-classification models: (pooler dense, classifier)
HF_HEAD_NAMES = {"bert": ("pooler.dense", "classifier"), "albert": ("pooler", "classifier"),
                 "roberta": ("classifier.dense", "classifier.out_proj")}


def final_head_from_hf(model_type: str, state: dict) -> dict:
    """jaxit's final head {"pooler", "out"} from HF head weights (torch layout)."""
    pool, out = HF_HEAD_NAMES[model_type]
    try:
        return {"pooler": {"kernel": np.ascontiguousarray(state[f"{pool}.weight"].T),
                           "bias": state[f"{pool}.bias"]},
                "out": {"kernel": np.ascontiguousarray(state[f"{out}.weight"].T),
                        "bias": state[f"{out}.bias"]}}
    except KeyError as e:
        raise RunError(f"the exported checkpoint has no {e.args[0]!r} (its classification "
                       "head)") from None


def flat_heads(heads: dict) -> dict[str, np.ndarray]:
    """Every head but "final" as {"a/b/c": array} (the layout of jaxit_heads.safetensors)."""
    out: dict[str, np.ndarray] = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}/{k}" if prefix else k, v)
        else:
            out[prefix] = np.ascontiguousarray(np.asarray(node, np.float32))

    walk("", {k: v for k, v in heads.items() if k != "final"})
    return out


def _set_path(tree: dict, path: list[str], value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value
