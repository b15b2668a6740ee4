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

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "flax_model.msgpack")
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


def _strip_prefix(state: dict[str, np.ndarray], strict: bool = True) -> dict[str, np.ndarray]:
    """Drops the model prefix (`bert.`, ...) found on the word-embedding key, and head keys."""
    for p in MODEL_PREFIXES:
        if f"{p}embeddings.word_embeddings.weight" in state:
            out = {}
            outside = []
            for k, v in state.items():
                if k.startswith(p):
                    out[k[len(p):]] = v
                elif not k.startswith(HEAD_PREFIXES):
                    outside.append(k)
            if outside and strict:
                raise CheckpointError(
                    f"unexpected key(s) outside the model prefix {p!r}: "
                    f"[{', '.join(_few(sorted(outside)))}]"
                )
            return out
    raise CheckpointError(
        "missing key 'embeddings.word_embeddings.weight' (tried prefixes "
        f"{[p for p in MODEL_PREFIXES if p]} and none); keys start with "
        f"{sorted(state)[:5]}"
    )


def params_from_state_dict(
    cfg: EncoderConfig, state: dict[str, np.ndarray], strict: bool = True
) -> dict:
    """Torch-layout HF state dict -> jaxit params. Raises one `CheckpointError` naming every
    missing key, every shape mismatch (with both shapes) and, when `strict`, every
    unexpected key."""
    state = _strip_prefix({_normalise_key(k): v for k, v in state.items()}, strict)
    expected = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0), with_pooler=True))
    pooler = _POOLER.get(cfg.model_type)
    # a pooler is optional, but half a pooler is a broken checkpoint (reported as missing)
    has_pooler = pooler is not None and any(k.startswith(pooler + ".") for k in state)
    used: set[str] = set()
    missing: list[str] = []
    mismatched: list[str] = []
    params: dict = {}
    layer_parts: dict = {}
    for path, idx, modules in _module_table(cfg):
        if path == ("pooler",) and not has_pooler:
            continue
        is_embedding = path[0] == "embeddings" and path[1] != "ln"
        is_ln = path[-1].endswith("ln")
        for suffix in ("weight",) if is_embedding else ("weight", "bias"):
            if is_embedding:
                name, leaf_path = None, path
            elif is_ln:
                name = "scale" if suffix == "weight" else "bias"
                leaf_path = path + (name,)
            else:
                name = "kernel" if suffix == "weight" else "bias"
                leaf_path = path + (name,)
            exp = tuple(_get(expected, leaf_path).shape)
            if idx is not None:
                exp = exp[1:]
            want = _hf_part_shape(exp, name, len(modules))
            parts = []
            for m in modules:
                key = f"{m}.{suffix}"
                if key not in state:
                    missing.append(key)
                    continue
                used.add(key)
                arr = np.asarray(state[key])
                if tuple(arr.shape) != want:
                    mismatched.append(
                        f"{key!r}: checkpoint has {tuple(arr.shape)}, the config expects {want}"
                    )
                    continue
                parts.append(arr.T if name == "kernel" else arr)  # torch [out, in] -> [in, out]
            if len(parts) != len(modules):
                continue
            arr = (np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0])
            arr = arr.astype(np.float32)
            if idx is None:
                _set(params, leaf_path, arr)
            else:
                layer_parts.setdefault(leaf_path, {})[idx] = arr
    leftover = sorted(k for k in state if k not in used and not k.endswith(BUFFER_SUFFIXES)
                      and not k.startswith(HEAD_PREFIXES))
    problems = []
    if missing:
        problems.append(f"missing key(s) [{', '.join(_few(missing))}]")
    if mismatched:
        problems.append("shape mismatch for " + "; ".join(_few(mismatched, quote=False)))
    if leftover and strict:
        problems.append(f"unexpected key(s) [{', '.join(_few(leftover))}]")
    if problems:
        raise CheckpointError(
            f"checkpoint does not fit a {cfg.model_type} with {cfg.num_layers} layers, hidden "
            f"size {cfg.hidden_size} (from config.json): " + "; ".join(problems)
        )
    for path, by_layer in layer_parts.items():
        _set(params, path, np.stack([by_layer[i] for i in range(cfg.num_layers)]))
    return params


def _few(items: list[str], n: int = 10, quote: bool = True) -> list[str]:
    """The first `n` items (repr'd when `quote`) and a count of the rest."""
    shown = [repr(i) if quote else i for i in items[:n]]
    if len(items) > n:
        shown.append(f"... ({len(items) - n} more)")
    return shown


def _hf_part_shape(exp: tuple, name: str | None, n_fused: int) -> tuple:
    """The HF (torch-layout) shape of one of the `n_fused` parts of our leaf of shape `exp`."""
    if name == "kernel":  # ours [in, n * out] -> torch Linear [out, in]
        return (exp[1] // n_fused, exp[0])
    if name == "bias":
        return (exp[0] // n_fused,)
    return exp


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
        return _read_safetensors(st)
    index = ckpt_dir / "model.safetensors.index.json"
    if index.is_file():  # sharded: read every shard named in the index's weight_map
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index: {e}") from e
        state: dict[str, np.ndarray] = {}
        for shard in shards:
            if not (ckpt_dir / shard).is_file():
                raise CheckpointError(f"{index} names shard {shard!r}, which is not in {ckpt_dir}")
            state.update(_read_safetensors(ckpt_dir / shard))
        return state
    pt = ckpt_dir / "pytorch_model.bin"
    if pt.is_file():
        try:
            import torch
        except ImportError as e:
            raise CheckpointError(
                f"{pt} needs torch to read; install jaxit[torch-ref] or convert to safetensors"
            ) from e
        try:
            sd = torch.load(str(pt), map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{pt} is not a readable torch checkpoint: {e}") from e
        return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}
    fx = ckpt_dir / "flax_model.msgpack"
    if fx.is_file():
        return _flax_to_torch_layout(fx)
    raise FileNotFoundError(f"no weights in {ckpt_dir}: expected one of {WEIGHT_FILES}")


def _read_safetensors(st: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(st))
    except TypeError:  # numpy has no bfloat16: read through JAX, which has
        from safetensors.flax import load_file as load_jax

        try:
            return {k: np.asarray(v.astype(jax.numpy.float32))
                    if jax.numpy.issubdtype(v.dtype, jax.numpy.floating) else np.asarray(v)
                    for k, v in load_jax(str(st)).items()}
        except Exception as e:
            raise CheckpointError(f"{st} is not a readable safetensors file: {e}") from e
    except Exception as e:
        raise CheckpointError(f"{st} is not a readable safetensors file: {e}") from e


def _flax_to_torch_layout(path: Path) -> dict[str, np.ndarray]:
    """Old transformers Flax checkpoints: nested dict with kernel [in, out], embedding,
    scale. Returns torch-layout flat keys so one code path maps both."""
    from flax import serialization
    from flax.traverse_util import flatten_dict

    try:
        tree = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:
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
    if p.exists():
        raise NotADirectoryError(f"checkpoint path {s!r} is a file; pass its directory")
    looks_local = s.startswith((".", "/", "~")) or s.count("/") > 1
    if looks_local:
        raise FileNotFoundError(f"checkpoint directory {s!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(
            s, allow_patterns=["*.json", "*.txt", "*.model", "*.safetensors",
                               "flax_model.msgpack"]))
    except Exception as e:
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
        copy_tokenizer_files(resolve_checkpoint(tokenizer_from), out)
    return out


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                   "special_tokens_map.json", "merges.txt", "vocab.json", "spiece.model")


def copy_tokenizer_files(src: Path, out: Path) -> bool:
    """Copies the Hugging Face tokenizer files found in `src` to `out`; whether any was."""
    copied = False
    for f in TOKENIZER_FILES:
        if (src / f).is_file():
            (out / f).write_bytes((src / f).read_bytes())
            copied = True
    return copied
