"""`jaxit export`: a trained run as a Hugging Face sequence-classification checkpoint.

The full-depth model (encoder, the final exit head's dense + tanh layer as the pooler, its
output layer as the classifier) goes to `model.safetensors` under Hugging Face's names, with
a config.json holding num_labels, id2label/label2id and problem_type, and the tokenizer
files. `AutoModelForSequenceClassification.from_pretrained(DIR)` and
`pipeline("text-classification", model=DIR)` then give the run's full-depth logits. Runs
whose heads pool the mean of the tokens (`method.pooling = "mean"`) get model_type
"jaxit_bert" and `modeling_jaxit.py` (load with `trust_remote_code=True`); without it,
transformers refuses the directory rather than pooling [CLS] silently.

Everything Hugging Face has no place for (intermediate exit heads, LTE, DACT's halting
units, AdapLeR's CPs, η, θ) goes to `jaxit_heads.safetensors`, and the run's config and
sweep to `jaxit_run.json` (layouts: `jaxit.inference.trained_run`), so that
`jaxit predict --workdir=DIR` and `load_predictor(DIR)` run the adaptive model from the
directory alone. A DACT run's Hugging Face model is its last layer's head; its own output
a_L mixes every exit and needs jaxit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from jaxit.encoders.config import config_to_hf_dict
from jaxit.encoders.weights import copy_tokenizer_files, params_to_state_dict
from jaxit.inference.trained_run import (
    EXPORT_FORMAT,
    EXPORT_HEADS,
    EXPORT_META,
    HF_HEAD_NAMES,
    RunError,
    TrainedRun,
    flat_heads,
)

HF_CLASSES = {"bert": "BertForSequenceClassification",
              "roberta": "RobertaForSequenceClassification",
              "albert": "AlbertForSequenceClassification"}


def hf_state_dict(run: TrainedRun) -> dict[str, np.ndarray]:
    """The full-depth model's weights under Hugging Face's sequence-classification names."""
    cfg = run.encoder.config
    mt = cfg.model_type
    head = run.heads["final"]
    enc = {k: v for k, v in run.params["encoder"].items() if k != "pooler"}
    if mt != "roberta":  # BERT and ALBERT: the head's dense + tanh is the model's pooler
        enc["pooler"] = head["pooler"]
    state = {f"{mt}.{k}": v for k, v in params_to_state_dict(cfg, enc).items()}
    pool, out = HF_HEAD_NAMES[mt]
    if mt == "roberta":
        state[f"{pool}.weight"] = np.asarray(head["pooler"]["kernel"], np.float32).T
        state[f"{pool}.bias"] = np.asarray(head["pooler"]["bias"], np.float32)
    state[f"{out}.weight"] = np.asarray(head["out"]["kernel"], np.float32).T
    state[f"{out}.bias"] = np.asarray(head["out"]["bias"], np.float32)
    return {k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}


def hf_config(run: TrainedRun) -> dict:
    """config.json: the encoder's, plus the task's labels and the model class."""
    cfg = run.encoder.config
    task = run.task
    d = config_to_hf_dict(cfg)
    names = list(task.label_names) if task.label_names else ["value"]
    d.update(architectures=[HF_CLASSES[cfg.model_type]], num_labels=task.num_labels,
             id2label={str(i): n for i, n in enumerate(names)},
             label2id={n: i for i, n in enumerate(names)},
             problem_type="regression" if task.is_regression else "single_label_classification",
             jaxit={"method": run.method_name, "task": task.name, "pooling": run.pooling,
                    "step": run.step})
    if run.pooling == "mean":
        d.update(model_type="jaxit_bert", architectures=["JaxitBertForSequenceClassification"],
                 auto_map={"AutoConfig": "modeling_jaxit.JaxitBertConfig",
                           "AutoModelForSequenceClassification":
                               "modeling_jaxit.JaxitBertForSequenceClassification"})
    return d


def check_exportable(run: TrainedRun) -> None:
    from jaxit.heads import head_kind

    if head_kind(run.heads["final"]) == "attention":
        raise RunError("this run's classifier is FastBERT's attention head, which Hugging Face "
                       "has no class for: `jaxit predict` runs it; train with "
                       "--config.method.head=bert to export")
    mt = run.encoder.config.model_type
    if mt not in HF_CLASSES:
        raise RunError(f"export supports {', '.join(HF_CLASSES)} encoders; {mt}'s Hugging Face "
                       "classification head (dense + ReLU) is not jaxit's (dense + tanh)")
    if run.pooling == "mean" and mt != "bert":
        raise RunError(f"export of mean-pooled heads is implemented for BERT only, not {mt}")
    if run.pooling not in ("cls", "mean"):
        raise RunError(f"unknown pooling {run.pooling!r}")


def export_run(run: TrainedRun, out_dir) -> Path:
    """Writes the export (module docstring) to `out_dir`, which must be new or empty."""
    from safetensors.numpy import save_file

    check_exportable(run)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"--out {out_dir} exists and is not an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    save_file(hf_state_dict(run), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config(run), indent=2))
    extra = flat_heads(run.heads)
    if extra:
        save_file(extra, str(out / EXPORT_HEADS))
    if run.pooling == "mean":
        shutil.copyfile(Path(__file__).with_name("hf_modeling_jaxit.py"), out / "modeling_jaxit.py")
    _write_tokenizer(run, out)
    meta = {"format": EXPORT_FORMAT, "model_type": run.encoder.config.model_type,
            "config": run.config.to_dict(), "step": run.step, "sweep": run.sweep,
            "pooling": run.pooling, "heads": sorted(run.heads), "source": str(run.path)}
    (out / EXPORT_META).write_text(json.dumps(meta, indent=2, default=float))
    return out


def _write_tokenizer(run: TrainedRun, out: Path) -> None:
    src = Path(str(run.config.tokenizer or run.config.model))
    if not (src.is_dir() and copy_tokenizer_files(src, out)):  # e.g. the synthetic tokenizer: only the `tokenizers` object exists
        run.tokenizer.save(str(out / "tokenizer.json"))
        specials = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                    "unk_token": "[UNK]", "mask_token": "[MASK]"}
        (out / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": run.max_length, **specials}, indent=2))
