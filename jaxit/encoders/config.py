"""Encoder hyper-parameters, read from (and written back to) Hugging Face `config.json`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

SUPPORTED_MODEL_TYPES = ("bert", "roberta", "albert", "distilbert")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
# "auto": cuDNN's fused attention on GPU in 16-bit compute without attention dropout, else
# "xla"; "xla": jaxit's own attention (head-major, deferred softmax normalisation);
# "dot_product": jax.nn.dot_product_attention's XLA implementation; "cudnn": forced cuDNN.
ATTENTION_IMPLS = ("auto", "xla", "dot_product", "cudnn")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Everything the functional encoder needs; frozen so it can be a static jit argument."""

    model_type: str  # one of SUPPORTED_MODEL_TYPES
    vocab_size: int
    hidden_size: int  # D
    num_layers: int  # L
    num_heads: int
    intermediate_size: int  # F
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # 0 means the model has no token-type embedding (DistilBERT)
    embedding_size: int | None = None  # ALBERT's factorised embedding width E (None: E = D)
    hidden_act: str = "gelu"  # "gelu" (erf), "gelu_new"/"gelu_pytorch_tanh" (tanh), "relu"
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    pad_token_id: int = 0
    # Run-time choices, not part of the checkpoint (config.json never holds them):
    dtype: str = "float32"  # compute dtype of matmuls and activations (params stay float32)
    attention: str = "auto"  # one of ATTENTION_IMPLS

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"unknown model_type {self.model_type!r}; jaxit supports {SUPPORTED_MODEL_TYPES}"
            )
        if self.dtype not in COMPUTE_DTYPES:
            raise ValueError(f"unknown compute dtype {self.dtype!r}; choose from {COMPUTE_DTYPES}")
        if self.attention not in ATTENTION_IMPLS:
            raise ValueError(
                f"unknown attention {self.attention!r}; choose from {ATTENTION_IMPLS}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def embed_dim(self) -> int:
        return self.embedding_size or self.hidden_size

    @property
    def shared_layers(self) -> bool:
        """ALBERT shares one Transformer layer across depth."""
        return self.model_type == "albert"

    @property
    def position_offset(self) -> int:
        """RoBERTa numbers positions from pad_token_id + 1."""
        return self.pad_token_id + 1 if self.model_type == "roberta" else 0

    def replace(self, **changes) -> EncoderConfig:
        return dataclasses.replace(self, **changes)


def with_precision(cfg: EncoderConfig, run_config) -> EncoderConfig:
    """`cfg` with a run config's `dtype` and `attention` (a dict or ConfigDict; runs saved
    before these options existed compute in float32 with attention "auto")."""
    return cfg.replace(dtype=str(run_config.get("dtype") or "float32"),
                       attention=str(run_config.get("attention") or "auto"))


def config_from_hf_dict(d: dict) -> EncoderConfig:
    """Maps a Hugging Face config dict to an `EncoderConfig` (raises on unknown model types
    and names any missing field)."""
    if not isinstance(d, dict):
        raise ValueError(  # noqa: TRY004 (a malformed file, like the other checks here)
            f"config.json must hold a JSON object, got {type(d).__name__}")
    if "model_type" not in d:
        raise ValueError(
            f"config.json has no 'model_type'; jaxit supports {SUPPORTED_MODEL_TYPES}"
        )
    try:
        return _config_from_hf_dict(d)
    except KeyError as e:
        raise ValueError(
            f"config.json for model_type {d['model_type']!r} is missing the field {e.args[0]!r}"
        ) from None


def _config_from_hf_dict(d: dict) -> EncoderConfig:
    model_type = d.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"unknown model_type {model_type!r} in config.json; jaxit supports "
            f"{SUPPORTED_MODEL_TYPES}"
        )
    if model_type == "distilbert":
        if d.get("sinusoidal_pos_embds"):
            raise ValueError("DistilBERT with sinusoidal_pos_embds=True is not supported")
        return EncoderConfig(
            model_type=model_type,
            vocab_size=d["vocab_size"],
            hidden_size=d["dim"],
            num_layers=d["n_layers"],
            num_heads=d["n_heads"],
            intermediate_size=d["hidden_dim"],
            max_position_embeddings=d.get("max_position_embeddings", 512),
            type_vocab_size=0,
            hidden_act=d.get("activation", "gelu"),
            layer_norm_eps=1e-12,
            hidden_dropout=d.get("dropout", 0.1),
            attention_dropout=d.get("attention_dropout", 0.1),
            pad_token_id=d.get("pad_token_id", 0),
        )
    if model_type == "albert" and (d.get("num_hidden_groups", 1) != 1
                                   or d.get("inner_group_num", 1) != 1):
        raise ValueError(
            "ALBERT with num_hidden_groups != 1 or inner_group_num != 1 is not supported "
            f"(got {d.get('num_hidden_groups')}, {d.get('inner_group_num')})"
        )
    if d.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"position_embedding_type {d['position_embedding_type']!r} is not supported"
        )
    return EncoderConfig(
        model_type=model_type,
        vocab_size=d["vocab_size"],
        hidden_size=d["hidden_size"],
        num_layers=d["num_hidden_layers"],
        num_heads=d["num_attention_heads"],
        intermediate_size=d["intermediate_size"],
        max_position_embeddings=d.get("max_position_embeddings", 512),
        type_vocab_size=d.get("type_vocab_size", 2),
        embedding_size=d.get("embedding_size") if model_type == "albert" else None,
        hidden_act=d.get("hidden_act", "gelu"),
        layer_norm_eps=d.get("layer_norm_eps", 1e-12),
        hidden_dropout=d.get("hidden_dropout_prob", 0.1),
        attention_dropout=d.get("attention_probs_dropout_prob", 0.1),
        pad_token_id=d.get("pad_token_id", 1 if model_type == "roberta" else 0),
    )


def config_to_hf_dict(cfg: EncoderConfig) -> dict:
    """Inverse of `config_from_hf_dict`: a config.json that transformers can load."""
    if cfg.model_type == "distilbert":
        return {
            "model_type": "distilbert",
            "architectures": ["DistilBertModel"],
            "vocab_size": cfg.vocab_size,
            "dim": cfg.hidden_size,
            "n_layers": cfg.num_layers,
            "n_heads": cfg.num_heads,
            "hidden_dim": cfg.intermediate_size,
            "max_position_embeddings": cfg.max_position_embeddings,
            "activation": cfg.hidden_act,
            "dropout": cfg.hidden_dropout,
            "attention_dropout": cfg.attention_dropout,
            "pad_token_id": cfg.pad_token_id,
            "sinusoidal_pos_embds": False,
        }
    arch = {"bert": "BertModel", "roberta": "RobertaModel", "albert": "AlbertModel"}
    d = {
        "model_type": cfg.model_type,
        "architectures": [arch[cfg.model_type]],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "hidden_act": cfg.hidden_act,
        "layer_norm_eps": cfg.layer_norm_eps,
        "hidden_dropout_prob": cfg.hidden_dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "pad_token_id": cfg.pad_token_id,
        "position_embedding_type": "absolute",
    }
    if cfg.model_type == "albert":
        d.update(embedding_size=cfg.embed_dim, num_hidden_groups=1, inner_group_num=1)
    return d


def load_config(path: str | Path) -> EncoderConfig:
    """Reads `config.json` from a checkpoint directory (or the file itself)."""
    path = Path(path)
    cfg_file = path / "config.json" if path.is_dir() else path
    if not cfg_file.is_file():
        raise FileNotFoundError(f"no config.json in {path}")
    try:
        d = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_file} is not valid JSON: {e}") from e
    return config_from_hf_dict(d)
