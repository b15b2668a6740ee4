"""Plain fine-tuning: the encoder and one BERT-style head on the last layer's [CLS]."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxit.batch import Batch
from jaxit.encoders.transformer import Encoder, mask_bias_from
from jaxit.heads import head_outputs, init_exit_head, task_loss
from jaxit.methods.base import Method


def make_finetune(encoder: Encoder, num_outputs: int, is_regression: bool,
                  pooling: str = "cls") -> Method:
    """Encoder + one head on the last layer's pooled features (`pooling`: see
    `jaxit.heads.pool_features`)."""
    cfg = encoder.config

    def init(rng, encoder_params):
        head = init_exit_head(rng, cfg.hidden_size, num_outputs, encoder_params.get("pooler"))
        return {"encoder": encoder_params, "heads": {"final": head}}

    def outputs(params, batch: Batch, rng=None):
        r_enc, r_head = (None, None) if rng is None else jax.random.split(rng)
        mask = mask_bias_from(jnp.asarray(batch.attention_mask))
        hidden = encoder.forward_all(params["encoder"], batch, r_enc, mask)["hidden"][-1]
        logits, _ = head_outputs(params["heads"]["final"], hidden,
                                 jnp.asarray(batch.attention_mask), pooling, r_head,
                                 cfg.hidden_dropout)
        return logits

    def loss(params, batch, rng, step):
        del step
        out = outputs(params, batch, rng)
        per_example = task_loss(out, jnp.asarray(batch.labels), is_regression)
        return per_example.mean(), {}

    def predict(params, batch):
        out = outputs(params, batch)
        return out[:, 0] if is_regression else out

    return Method(
        name="finetune", encoder=encoder, is_regression=is_regression,
        num_outputs=num_outputs, init=init, loss=loss, predict=predict,
        param_labels=lambda params: jax.tree.map(lambda _: "all", params),
        gates={"all": "train"},
    )
