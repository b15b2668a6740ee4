"""Everything a run needs that comes from its config: encoder, tokenizer, task data,
method, and deterministic batch streams."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxit.batch import Batch
from jaxit.encoders import (
    EncoderConfig,
    init_params,
    load_config,
    load_pretrained,
    load_tokenizer,
    make_encoder,
    with_precision,
)
from jaxit.methods.base import Method
from jaxit.methods.registry import make_method


@dataclasses.dataclass
class Setup:
    config: Any
    task: Any  # jaxit.data.TaskSpec
    tokenizer: Any  # tokenizers.Tokenizer
    encoder_params: dict
    method: Method
    train_data: Any  # jaxit.data.EncodedDataset
    eval_data: Any
    steps_per_epoch: int
    num_steps: int
    predict_fn: Callable

    def train_batches(self, start: int, stop: int) -> Iterator[tuple[int, Batch]]:
        """(step, batch) for steps [start, stop): epoch e's order comes from (seed, e), so a
        resumed run sees exactly the batches an uninterrupted run would."""
        from jaxit.data import iterate_batches

        c = self.config
        step = start
        while step < stop:
            epoch, offset = divmod(step, self.steps_per_epoch)
            it = iterate_batches(self.train_data, c.train.batch_size, buckets=_buckets(c),
                                 shuffle=True, seed=c.train.seed, epoch=epoch,
                                 drop_remainder=True, pad_id=self.pad_id,
                                 sort_chunk=c.data.sort_chunk)
            for i, batch in enumerate(it):
                if i < offset:
                    continue
                if step >= stop:
                    return
                yield step, batch
                step += 1

    def eval_batches(self, sort_by_length: bool = False):
        """(batch, valid) pairs covering the dev split once; in data order unless
        `sort_by_length` (less padding, for order-free metrics)."""
        from jaxit.data import eval_batches

        c = self.config
        return eval_batches(self.eval_data, c.eval_batch_size, buckets=_buckets(c),
                            pad_id=self.pad_id, sort_by_length=sort_by_length)

    @property
    def pad_id(self) -> int:
        return self.method.encoder.config.pad_token_id


def _buckets(c) -> tuple[int, ...]:
    return tuple(sorted({min(b, c.data.max_length) for b in c.data.buckets}
                        | {c.data.max_length}))


def load_encoder(config, vocab_size: int | None = None) -> tuple[EncoderConfig, dict]:
    """The pretrained encoder named by `config.model`, or a random one ("random"), with the
    run's depth (`truncate_layers`) and precision."""
    if config.model == "random":
        cfg = run_encoder_config(config, vocab_size)
        return cfg, jax.device_get(init_params(cfg, jax.random.PRNGKey(config.train.seed)))
    cfg, params = load_pretrained(config.model)
    cfg, params = _run_depth(config, cfg, params)
    return with_precision(cfg, config), params


def run_encoder_config(config, vocab_size: int | None = None) -> EncoderConfig:
    """The encoder config a run (dict or ConfigDict) trains with, read without its weights:
    the `model` directory's config.json, or the `random_encoder` block sized to `vocab_size`
    (the tokenizer's), then cut to `truncate_layers`, with its `dtype` and `attention`."""
    model = config.get("model")
    if model == "random":
        r = config["random_encoder"]
        if vocab_size is None:
            raise ValueError("a random encoder needs a tokenizer to size its vocabulary")
        cfg = EncoderConfig(
            model_type=r["model_type"], vocab_size=vocab_size, hidden_size=r["hidden_size"],
            num_layers=r["num_layers"], num_heads=r["num_heads"],
            intermediate_size=r["intermediate_size"],
            max_position_embeddings=max(r["max_position_embeddings"],
                                        config["data"]["max_length"]),
            type_vocab_size=0 if r["model_type"] == "distilbert" else 2,
            embedding_size=r["hidden_size"] // 2 if r["model_type"] == "albert" else None,
            pad_token_id=0)
    else:
        cfg, _ = _run_depth(config, load_config(Path(model)), {})
    return with_precision(cfg, config)


def _run_depth(config, cfg: EncoderConfig, params: dict) -> tuple[EncoderConfig, dict]:
    keep = int(config.get("truncate_layers", 0) or 0)
    return truncate_layers(cfg, params, keep) if keep else (cfg, params)


def truncate_layers(cfg: EncoderConfig, params: dict, keep: int) -> tuple[EncoderConfig, dict]:
    """The first `keep` layers of a pretrained encoder (BERxiT's "Limit" baseline: truncate,
    then fine-tune). ALBERT's shared layer is kept as is; only the depth changes."""
    if not 1 <= keep <= cfg.num_layers:
        raise ValueError(f"truncate_layers must be in 1..{cfg.num_layers}, got {keep}")
    if not cfg.shared_layers and "layers" in params:  # {}: the config only
        params = {**params, "layers": jax.tree.map(lambda x: x[:keep], params["layers"])}
    return cfg.replace(num_layers=keep), params


def load_run_tokenizer(config):
    if config.tokenizer == "synthetic":
        from jaxit.data.synthetic import synthetic_tokenizer

        return synthetic_tokenizer()
    src = config.tokenizer or config.model
    if src == "random":
        raise ValueError("config.model is 'random': set config.tokenizer (e.g. 'synthetic' or "
                         "a checkpoint directory)")
    return load_tokenizer(src)


def load_split(config, task, split: str, limit: int):
    from jaxit.data import load_examples
    from jaxit.resources import data_dir

    d = config.data
    if task.name == "custom":  # your own files (jaxit.data.custom)
        from jaxit.data.custom import load_custom_split

        examples, _ = load_custom_split(d, task, split)
    elif d.source == "synthetic":
        from jaxit.data.synthetic import make_synthetic_task

        train, dev = make_synthetic_task(d.synthetic_train, d.synthetic_dev, seed=config.train.seed)
        examples = train if split == "train" else dev
    else:
        kwargs = {"data_dir": d.data_dir or str(data_dir())}
        if d.source == "hf" and d.hf_path:
            kwargs["hf_path"] = d.hf_path
        examples = load_examples(task, split, source=d.source, **kwargs)
    if limit and limit < len(examples):
        order = np.random.default_rng(config.train.seed).permutation(len(examples))[:limit]
        examples = [examples[i] for i in sorted(order)]
    return examples


def build_setup(config) -> Setup:
    from jaxit.data import tokenize_examples
    from jaxit.data.custom import resolve_task
    from jaxit.train.validate import check_config

    check_config(config)  # ConfigError before any work
    task = resolve_task(config)  # task=custom: infers its labels into config.data (saved)
    tokenizer = load_run_tokenizer(config)
    enc_cfg, enc_params = load_encoder(config, tokenizer.get_vocab_size())
    if tokenizer.get_vocab_size() > enc_cfg.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.get_vocab_size()} tokens but the encoder's "
                         f"vocabulary has {enc_cfg.vocab_size}")
    if config.data.max_length > enc_cfg.max_position_embeddings:
        raise ValueError(f"data.max_length {config.data.max_length} exceeds the encoder's "
                         f"max_position_embeddings {enc_cfg.max_position_embeddings}")
    d = config.data
    train = tokenize_examples(tokenizer, task, load_split(config, task, d.train_split,
                                                          d.max_train_examples), d.max_length)
    dev = tokenize_examples(tokenizer, task, load_split(config, task, d.eval_split,
                                                        d.max_eval_examples), d.max_length)
    bs = config.train.batch_size
    steps_per_epoch = len(train) // bs
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train)} training examples are fewer than one batch of {bs}")
    num_steps = config.train.num_steps or math.ceil(config.train.num_epochs * steps_per_epoch)
    encoder = make_encoder(enc_cfg)
    num_outputs = 1 if task.is_regression else task.num_labels
    method = make_method(config.method, encoder, num_outputs, task.is_regression, num_steps,
                         steps_per_epoch=steps_per_epoch)
    if method.prepare_data is not None:  # e.g. AdapLeR's saliency targets, by guid
        train = method.prepare_data(train, d.train_split)
    return Setup(config, task, tokenizer, enc_params, method, train, dev, steps_per_epoch,
                 num_steps, jax.jit(method.predict))
