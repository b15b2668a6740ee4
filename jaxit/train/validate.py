"""Config validation before any work: `check_config(config)` raises `ConfigError` (one
line, naming the field) for an unknown field (with the closest valid name), a value of the
wrong kind, a number outside its range or a name that is not one of its choices.

The known fields are those of `jaxit.configs.base_config()` (where each is documented); a
config may leave fields out (methods use their defaults) but not add any. Called by
`build_setup`, so train, eval, sweep, interpret and the demo all check first."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from jaxit.data.tables import TABLE_FORMATS
from jaxit.encoders.config import ATTENTION_IMPLS, COMPUTE_DTYPES
from jaxit.errors import ConfigError, UnknownNameError, did_you_mean

_INF = math.inf


def _number(lo=-_INF, hi=_INF, *, lo_open=False, hi_open=False, integer=False):
    """A check: a finite (integer) number in [lo, hi] (open ends with lo_open/hi_open)."""
    kind = "an integer" if integer else "a number"

    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (
                integer and not float(v).is_integer()):
            return f"must be {kind}"
        if not math.isfinite(v) and not (v == hi == _INF):
            return "must be finite"
        if v < lo or (lo_open and v == lo) or v > hi or (hi_open and v == hi):
            left = "(" if lo_open else "["
            right = ")" if hi_open or hi == _INF else "]"
            if hi == _INF:
                return f"must be {'>' if lo_open else '>='} {lo:g}"
            return f"must be in {left}{lo:g}, {hi:g}{right}"
        return None

    return check


def _choice(*values):
    def check(v):
        if v not in values:
            return (f"must be one of {', '.join(repr(x) for x in values)}"
                    + did_you_mean(v, [x for x in values if isinstance(x, str)]))
        return None

    return check


def _flag(v):
    return None if isinstance(v, bool) else "must be True or False"


def _buckets(v):
    if not isinstance(v, (list, tuple)) or not v:
        return "must be a non-empty list of padded lengths"
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in v):
        return "must hold positive integers"
    if list(v) != sorted(set(v)):
        return "must be increasing"
    return None


_FRACTION = _number(0.0, 1.0)
_POSITIVE = _number(0.0, lo_open=True)
_NONNEG = _number(0.0)
_COUNT = _number(1, integer=True)
_NONNEG_INT = _number(0, integer=True)

CHECKS: dict[str, Callable] = {
    "random_encoder.model_type": _choice("bert", "roberta", "albert", "distilbert"),
    "random_encoder.hidden_size": _COUNT, "random_encoder.num_layers": _COUNT,
    "random_encoder.num_heads": _COUNT, "random_encoder.intermediate_size": _COUNT,
    "random_encoder.max_position_embeddings": _COUNT,
    "truncate_layers": _NONNEG_INT,
    "dtype": _choice(*COMPUTE_DTYPES),
    "attention": _choice(*ATTENTION_IMPLS),
    "init_from_checkpoint": lambda v: None if str(v) in ("best", "latest") or str(v).isdigit()
    else "must be best, latest or a step number",
    "data.source": _choice("local", "hf", "tfds", "synthetic"),
    "data.max_length": _number(2, integer=True),
    "data.buckets": _buckets,
    "data.sort_chunk": _COUNT,
    "data.max_train_examples": _NONNEG_INT, "data.max_eval_examples": _NONNEG_INT,
    "data.synthetic_train": _COUNT, "data.synthetic_dev": _COUNT,
    "data.format": _choice("", *TABLE_FORMATS),
    "data.label_base": _choice(-1, 0, 1),
    "data.regression": _flag,
    "method.lte": _flag,
    "method.stage1_fraction": _FRACTION,
    "method.t_init": _number(),
    "method.elbert_heads": _choice("shared", "per_layer"),
    "method.head": _choice(None, "bert", "attention"),
    "method.weights_lr_scale": _POSITIVE, "method.distill_lr_scale": _POSITIVE,
    "method.exits_lr_scale": _POSITIVE, "method.cp_lr_scale": _POSITIVE,
    "method.tau": _NONNEG,
    "method.halting_bias": _number(),
    "method.pooling": _choice("cls", "mean"),
    "method.gamma": _NONNEG, "method.phi": _NONNEG,
    "method.lambda_base": _POSITIVE, "method.lambda_growth": _POSITIVE,
    "method.beta": _FRACTION,
    "method.eta_init": _NONNEG, "method.theta_init": _NONNEG,
    "method.speed_lr": _POSITIVE, "method.speed_warmup_fraction": _FRACTION,
    "method.speed_clip_norm": _NONNEG,
    "train.batch_size": _COUNT,
    "train.num_epochs": _NONNEG,
    "train.num_steps": _NONNEG_INT,
    "train.learning_rate": _POSITIVE,
    "train.warmup_fraction": _FRACTION,
    "train.weight_decay": _NONNEG,
    "train.adam_b1": _number(0.0, 1.0, hi_open=True),
    "train.adam_b2": _number(0.0, 1.0, hi_open=True),
    "train.adam_eps": _POSITIVE,
    "train.grad_clip_norm": _NONNEG,
    "train.seed": _NONNEG_INT,
    "eval_every": _NONNEG_INT, "eval_batch_size": _COUNT, "save_every": _COUNT,
    "keep_checkpoints": _COUNT, "keep_best": _COUNT, "log_every": _COUNT,
    "num_devices": _NONNEG_INT,
    "progress": _flag,
}


def _flat(d: Mapping, prefix: str = "") -> dict:
    """{dotted path: value} of a nested mapping (ConfigDicts included)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping) or hasattr(v, "items") and not isinstance(v, (str, bytes)):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def unknown_field_error(path: str, known: Mapping | None = None) -> ConfigError:
    """The error for a config field `path` ("train.lerning_rate") that does not exist."""
    known = _known() if known is None else known
    parent = path.rpartition(".")[0]
    siblings = [k for k in known if k.rpartition(".")[0] == parent]
    hint = did_you_mean(path, siblings) or did_you_mean(path, known)
    return ConfigError(f"unknown config field {path}{hint}")


def unknown_fields(paths) -> list[str]:
    """The dotted paths among `paths` that are not config fields (nor field groups)."""
    known = _known()
    groups = {k.rsplit(".", i)[0] for k in known for i in range(1, k.count(".") + 1)}
    return [p for p in paths if p not in known and p not in groups]


def _known() -> dict:
    from jaxit.configs import base_config

    return _flat(base_config())


def check_config(config, num_devices_available: int | None = None) -> None:
    """Raises ConfigError for the first problem in `config` (see the module docstring).
    `num_devices_available` (default: jax.device_count()) checks num_devices and that the
    batch size splits over the devices."""
    known = _known()
    flat = _flat(config)
    for path in flat:
        if path not in known:
            raise unknown_field_error(path, known)
    for path, value in flat.items():
        check = CHECKS.get(path)
        problem = check(value) if check is not None else _same_kind(value, known[path])
        if problem:
            raise ConfigError(f"config.{path}={value!r}: {problem}")
    _check_names(flat)
    _check_relations(flat, num_devices_available)


def _same_kind(value, default) -> str | None:
    """Fields without their own check: a string field must hold a string."""
    if isinstance(default, str) and not isinstance(value, str):
        return "must be a string"
    return None


def _check_names(flat: dict) -> None:
    from jaxit.data.tasks import get_task
    from jaxit.methods.early_exit import ALIASES, STRATEGIES
    from jaxit.methods.registry import method_names

    task = flat.get("task")
    if task is not None and task != "custom":
        get_task(task)  # UnknownNameError listing the known tasks
    name = flat.get("method.name")
    if name is not None and name not in method_names():
        raise UnknownNameError(f"unknown method {name!r}{did_you_mean(name, method_names())}; "
                               f"known methods: {', '.join(method_names())}")
    head = flat.get("method.head")
    if head == "attention" and name is not None and name not in ALIASES:
        raise ConfigError(f"config.method.head='attention': {name} has BERT-style heads only; "
                          f"attention heads are for {', '.join(ALIASES)}")
    strategy = flat.get("method.strategy")
    if strategy is not None and strategy not in STRATEGIES:
        raise ConfigError(f"config.method.strategy={strategy!r}: must be one of "
                          f"{', '.join(STRATEGIES)}{did_you_mean(strategy, STRATEGIES)}")


def _check_relations(flat: dict, available: int | None) -> None:
    """Checks between fields: layers/heads, the step budget, batch size vs devices."""
    hidden, heads = flat.get("random_encoder.hidden_size"), flat.get("random_encoder.num_heads")
    if flat.get("model") == "random" and hidden and heads and hidden % heads:
        raise ConfigError(f"config.random_encoder.hidden_size={hidden} is not divisible by "
                          f"random_encoder.num_heads={heads}")
    if flat.get("train.num_steps", 1) == 0 and flat.get("train.num_epochs", 1) == 0:
        raise ConfigError("config.train.num_steps and train.num_epochs are both 0: set one")
    want = flat.get("num_devices", 0)
    if available is None and (want or flat.get("train.batch_size", 1) > 1):
        import jax

        available = jax.device_count()
    if available is None:
        return
    if want > available:
        raise ConfigError(f"config.num_devices={want}: only {available} devices are available")
    n = want or available
    bs = flat.get("train.batch_size")
    if bs is not None and bs % n:
        raise ConfigError(f"config.train.batch_size={bs} is not divisible by the {n} devices "
                          "(set num_devices, or a batch size that is a multiple of it)")
