"""Load and save Hugging Face checkpoints as jaxit param trees (strict about every key).

Sources: a local checkpoint directory, or a hub id (downloaded with `huggingface_hub` when
online). Files: `model.safetensors` (torch layout: Linear weights are [out, in]; keys with
or without a model prefix such as `bert.`), `pytorch_model.bin` (only when torch is
installed) and `flax_model.msgpack` (Flax layout). `config.json` gives the `EncoderConfig`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import jax
import numpy as np

from jaxit.encoders.config import EncoderConfig, config_to_hf_dict, load_config
from jaxit.encoders.transformer import init_params

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "flax_model.msgpack")
MODEL_PREFIXES = ("bert.", "roberta.", "albert.", "distilbert.", "model.", "")
# Keys of task or pre-training heads that may sit beside the encoder; never loaded.
HEAD_PREFIXES = ("cls.", "lm_head.", "predictions.", "sop_classifier.", "classifier.",
                 "pre_classifier.", "qa_outputs.", "vocab_transform.", "vocab_layer_norm.",
                 "vocab_projector.", "dropout.")
BUFFER_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")

_LAYER_PREFIX = {
    "bert": "encoder.layer.{i}.",
    "roberta": "encoder.layer.{i}.",
    "distilbert": "transformer.layer.{i}.",
    "albert": "encoder.albert_layer_groups.0.albert_layers.0.",
}
# our layer param name -> HF module name(s) under the layer prefix (three for fused qkv)
_LAYER_MODULES = {
    "bert": {
        "qkv": ("attention.self.query", "attention.self.key", "attention.self.value"),
        "attn_out": ("attention.output.dense",),
        "attn_ln": ("attention.output.LayerNorm",),
        "ffn_in": ("intermediate.dense",),
        "ffn_out": ("output.dense",),
        "ffn_ln": ("output.LayerNorm",),
    },
    "distilbert": {
        "qkv": ("attention.q_lin", "attention.k_lin", "attention.v_lin"),
        "attn_out": ("attention.out_lin",),
        "attn_ln": ("sa_layer_norm",),
        "ffn_in": ("ffn.lin1",),
        "ffn_out": ("ffn.lin2",),
        "ffn_ln": ("output_layer_norm",),
    },
    "albert": {
        "qkv": ("attention.query", "attention.key", "attention.value"),
        "attn_out": ("attention.dense",),
        "attn_ln": ("attention.LayerNorm",),
        "ffn_in": ("ffn",),
        "ffn_out": ("ffn_output",),
        "ffn_ln": ("full_layer_layer_norm",),
    },
}
_LAYER_MODULES["roberta"] = _LAYER_MODULES["bert"]
_POOLER = {"bert": "pooler.dense", "roberta": "pooler.dense", "albert": "pooler"}


class CheckpointError(ValueError):
    """A checkpoint does not match the model it is loaded into."""


def _module_table(cfg: EncoderConfig) -> list[tuple[tuple[str, ...], int | None, tuple[str, ...]]]:
    """(our path to a module, layer index or None, HF module names) for every module."""
    mt = cfg.model_type
    rows: list = [
        (("embeddings", "word"), None, ("embeddings.word_embeddings",)),
        (("embeddings", "position"), None, ("embeddings.position_embeddings",)),
        (("embeddings", "ln"), None, ("embeddings.LayerNorm",)),
    ]
    if cfg.type_vocab_size:
        rows.append((("embeddings", "token_type"), None, ("embeddings.token_type_embeddings",)))
    if mt == "albert":
        rows.append((("embed_proj",), None, ("encoder.embedding_hidden_mapping_in",)))
    n_layers = 1 if cfg.shared_layers else cfg.num_layers
    for i in range(n_layers):
        prefix = _LAYER_PREFIX[mt].format(i=i)
        for ours, theirs in _LAYER_MODULES[mt].items():
            idx = None if cfg.shared_layers else i
            rows.append((("layers", ours), idx, tuple(prefix + t for t in theirs)))
    if mt in _POOLER:
        rows.append((("pooler",), None, (_POOLER[mt],)))
    return rows


def _normalise_key(k: str) -> str:
    if k.endswith(".gamma"):
        return k[: -len(".gamma")] + ".weight"
    if k.endswith(".beta"):
        return k[: -len(".beta")] + ".bias"
    return k


def _strip_prefix(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for p in MODEL_PREFIXES:
        if f"{p}embeddings.word_embeddings.weight" in state:
            out = {}
            for k, v in state.items():
                if k.startswith(p):
                    out[k[len(p):]] = v
                elif not k.startswith(HEAD_PREFIXES):
                    raise CheckpointError(f"unexpected key {k!r} outside the model prefix {p!r}")
            return out
    raise CheckpointError(
        "missing key 'embeddings.word_embeddings.weight' (tried prefixes "
        f"{[p for p in MODEL_PREFIXES if p]} and none); keys start with "
        f"{sorted(state)[:5]}"
    )


def params_from_state_dict(
    cfg: EncoderConfig, state: dict[str, np.ndarray], strict: bool = True
) -> dict:
    """Torch-layout HF state dict -> jaxit params. Raises `CheckpointError` naming any
    missing key, unexpected key or shape mismatch (with both shapes)."""
    state = {_normalise_key(k): np.asarray(v) for k, v in state.items()}
    state = _strip_prefix(state)
    expected = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0), with_pooler=True))
    used: set[str] = set()
    params: dict = {}
    layer_parts: dict = {}
    has_pooler = all(f"{_POOLER.get(cfg.model_type, '-')}.{s}" in state for s in ("weight", "bias"))
    for path, idx, modules in _module_table(cfg):
        if path == ("pooler",) and not has_pooler:
            continue
        is_embedding = path[0] == "embeddings" and path[1] != "ln"
        is_ln = path[-1].endswith("ln")
        leaves: dict[str, np.ndarray] = {}
        suffixes = ("weight",) if is_embedding else ("weight", "bias")
        for suffix in suffixes:
            parts = []
            for m in modules:
                key = f"{m}.{suffix}"
                if key not in state:
                    raise CheckpointError(f"missing key {key!r} in checkpoint (for {'/'.join(path)})")
                used.add(key)
                parts.append(state[key])
            if suffix == "weight" and not (is_embedding or is_ln):
                parts = [p.T for p in parts]  # torch Linear [out, in] -> kernel [in, out]
            arr = np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
            name = ("scale" if suffix == "weight" else "bias") if is_ln else (
                "kernel" if suffix == "weight" else "bias")
            leaves[name] = arr.astype(np.float32)
        if is_embedding:
            leaf = leaves["kernel"] if "kernel" in leaves else leaves["scale"]
            _check_shape(expected, path, leaf.shape, modules[0] + ".weight")
            _set(params, path, leaf)
            continue
        for name, arr in leaves.items():
            exp = _get(expected, path + (name,)).shape
            exp_one = exp[1:] if idx is not None else exp
            if tuple(arr.shape) != tuple(exp_one):
                hf_key = f"{modules[0]}.{'bias' if name == 'bias' else 'weight'}"
                raise CheckpointError(
                    f"shape mismatch for {hf_key!r}: checkpoint has {_hf_shape(arr, name, len(modules))}, "
                    f"the config expects {_hf_shape(np.empty(exp_one), name, len(modules))}"
                )
            if idx is None:
                _set(params, path + (name,), arr)
            else:
                layer_parts.setdefault(path + (name,), {})[idx] = arr
    for path, by_layer in layer_parts.items():
        _set(params, path, np.stack([by_layer[i] for i in range(cfg.num_layers)]))
    leftover = sorted(k for k in state if k not in used and not k.endswith(BUFFER_SUFFIXES)
                      and not k.startswith(HEAD_PREFIXES))
    if leftover and strict:
        raise CheckpointError(
            f"unexpected key(s) in checkpoint for a {cfg.model_type} with {cfg.num_layers} "
            f"layers: {leftover[:10]}{' ...' if len(leftover) > 10 else ''}"
        )
    return jax.tree.map(np.asarray, params)


def _hf_shape(arr, name, n_fused):
    """Shape as HF stores it (transposed, per fused part) for error messages."""
    shape = tuple(arr.shape)
    if name == "kernel":
        shape = (shape[1] // n_fused, shape[0])
    elif name == "bias" and n_fused > 1:
        shape = (shape[0] // n_fused,)
    return shape


def _check_shape(expected, path, shape, key):
    exp = tuple(_get(expected, path).shape)
    if tuple(shape) != exp:
        raise CheckpointError(
            f"shape mismatch for {key!r}: checkpoint has {tuple(shape)}, the config expects {exp}"
        )


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def _set(tree, path, value):
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def params_to_state_dict(cfg: EncoderConfig, params: dict) -> dict[str, np.ndarray]:
    """jaxit params -> torch-layout HF state dict (no model prefix), the inverse of
    `params_from_state_dict`."""
    out: dict[str, np.ndarray] = {}
    for path, idx, modules in _module_table(cfg):
        if path == ("pooler",) and "pooler" not in params:
            continue
        node = _get(params, path)
        if path[0] == "embeddings" and path[1] != "ln":
            out[f"{modules[0]}.weight"] = np.asarray(node, np.float32)
            continue
        is_ln = path[-1].endswith("ln")
        for name, arr in node.items():
            arr = np.asarray(arr if idx is None else arr[idx], np.float32)
            parts = np.split(arr, len(modules), axis=-1)
            for m, part in zip(modules, parts):
                if name == "bias":
                    out[f"{m}.bias"] = part
                else:
                    out[f"{m}.weight"] = part if is_ln else np.ascontiguousarray(part.T)
    return out


def _read_state(ckpt_dir: Path) -> dict[str, np.ndarray]:
    """Reads the first weight file found in `ckpt_dir` as a torch-layout flat dict."""
    st = ckpt_dir / "model.safetensors"
    if st.is_file():
        from safetensors.numpy import load_file

        try:
            return load_file(str(st))
        except Exception as e:  # noqa: BLE001 - re-raised with the file named
            raise CheckpointError(f"{st} is not a readable safetensors file: {e}") from e
    pt = ckpt_dir / "pytorch_model.bin"
    if pt.is_file():
        try:
            import torch
        except ImportError as e:
            raise CheckpointError(
                f"{pt} needs torch to read; install jaxit[torch-ref] or convert to safetensors"
            ) from e
        sd = torch.load(str(pt), map_location="cpu", weights_only=True)
        return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}
    fx = ckpt_dir / "flax_model.msgpack"
    if fx.is_file():
        return _flax_to_torch_layout(fx)
    raise FileNotFoundError(f"no weights in {ckpt_dir}: expected one of {WEIGHT_FILES}")


def _flax_to_torch_layout(path: Path) -> dict[str, np.ndarray]:
    """Old transformers Flax checkpoints: nested dict with kernel [in, out], embedding,
    scale. Returns torch-layout flat keys so one code path maps both."""
    from flax import serialization
    from flax.traverse_util import flatten_dict

    try:
        tree = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path} is not a readable Flax msgpack file: {e}") from e
    out = {}
    for keys, v in flatten_dict(tree).items():
        *mods, leaf = (str(k) for k in keys)
        v = np.asarray(v)
        if leaf == "kernel":
            leaf, v = "weight", v.T
        elif leaf in ("embedding", "scale"):
            leaf = "weight"
        out[".".join(mods + [leaf])] = v
    return out


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A local checkpoint directory, or a hub id downloaded with `snapshot_download`."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    s = str(name_or_path)
    looks_local = p.exists() or s.startswith((".", "/", "~")) or s.count("/") > 1
    if looks_local:
        raise FileNotFoundError(f"checkpoint directory {s!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(
            s, allow_patterns=["*.json", "*.txt", "*.model", "model.safetensors",
                               "flax_model.msgpack"]))
    except Exception as e:  # noqa: BLE001 - any hub failure gets one clear message
        raise FileNotFoundError(
            f"{s!r} is not a local directory and could not be fetched from the Hugging Face "
            f"hub ({type(e).__name__}: {e}). Pass a local checkpoint directory when offline."
        ) from e


def load_pretrained(name_or_path: str | os.PathLike, strict: bool = True):
    """Loads (EncoderConfig, params) from a checkpoint directory or hub id."""
    ckpt = resolve_checkpoint(name_or_path)
    cfg = load_config(ckpt)
    params = params_from_state_dict(cfg, _read_state(ckpt), strict=strict)
    return cfg, params


def save_pretrained(
    out_dir: str | os.PathLike, cfg: EncoderConfig, params: dict,
    tokenizer_from: str | os.PathLike | None = None,
) -> Path:
    """Writes `model.safetensors` (HF torch layout) and `config.json` so that
    `transformers.AutoModel.from_pretrained(out_dir)` loads our params; copies the
    tokenizer files from `tokenizer_from` when given."""
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(params_to_state_dict(cfg, params), str(out / "model.safetensors"),
              metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config_to_hf_dict(cfg), indent=2))
    if tokenizer_from is not None:
        src = resolve_checkpoint(tokenizer_from)
        for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                  "merges.txt", "vocab.json", "spiece.model"):
            if (src / f).is_file():
                (out / f).write_bytes((src / f).read_bytes())
    return out
