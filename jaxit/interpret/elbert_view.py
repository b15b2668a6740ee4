"""ELBERT's visualisation of the early-exit decision (seed 004 §4.5, figures 4-5): for each
example, the cumulative attention of [CLS] to every token layer by layer, and the class
probabilities of the shared classifier at every layer with the layer where ELBERT's
confidence-window rule exits.

Cumulative attention (the paper builds it from BertViz without a formula; ours, stated):
A_l[j] = mean over heads of layer l's attention from the [CLS] query to token j, and
C_l[j] = (1 / l) * sum_{k <= l} A_k[j]: the average [CLS] row over layers 1..l, so every row
sums to 1 and a token whose attention keeps rising shows as a rising column.

Files (under `jaxit interpret`'s out dir): elbert_<i>.png (heatmap of C over layers x
tokens with the exit layer marked, and the probabilities per layer), elbert.html (the same
heatmaps as a page, with each example's exit layer and answers), elbert.json (the numbers).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxit.batch import Batch
from jaxit.encoders.transformer import Encoder, mask_bias_from
from jaxit.heads import all_exit_heads, stacked_heads
from jaxit.inference.policies import layer_output


def cls_attention_fn(encoder: Encoder, pooling: str = "cls"):
    """A jitted fn(params, batch of one example) -> (attention [L, n] (head mean of the
    [CLS] query's row), outputs [L, C] (every layer's exit-head logits)); build it once and
    call it per example (one compile per length)."""

    @jax.jit
    def run(p, b):
        enc = p["encoder"]
        hidden = encoder.embed(enc, b)
        bias = mask_bias_from(b.attention_mask, hidden.dtype)
        rows, states = [], []
        for i in range(encoder.config.num_layers):
            hidden, probs = encoder.block(encoder.layer_params(enc, i), hidden, bias,
                                          return_attention=True)
            rows.append(probs[0, :, 0, :].mean(0))  # [H, Tq, Tk] -> [CLS] row, head mean
            states.append(hidden)
        outs, _ = all_exit_heads(stacked_heads(p["heads"]), jnp.stack(states), b.attention_mask,
                                 pooling)
        return jnp.stack(rows), outs[:, 0]

    return run


def cls_attention_and_outputs(fn, params: dict, ids: np.ndarray, types: np.ndarray):
    """`fn` (from `cls_attention_fn`) on one example's ids, types [n], as float64 numpy."""
    batch = Batch(jnp.asarray(ids)[None], jnp.asarray(types)[None],
                  jnp.ones((1, len(ids)), jnp.int32))
    att, outs = fn(params, batch)
    return np.asarray(att, np.float64), np.asarray(outs, np.float64)


def cumulative_attention(att: np.ndarray) -> np.ndarray:
    """[L, n] per-layer rows -> [L, n] running means over layers 1..l (module docstring)."""
    att = np.asarray(att, np.float64)
    return np.cumsum(att, axis=0) / np.arange(1, att.shape[0] + 1)[:, None]


def exit_layer(policy, outputs: np.ndarray) -> int:
    """The 1-based layer where `policy` stops on these per-layer logits [L, C]."""
    policy.reset()
    for layer, out in enumerate(outputs, start=1):
        if policy.update(layer, layer_output(out)):
            return layer
    return len(outputs)


def elbert_records(encoder, params, examples: Sequence, tokens: Sequence[Sequence[str]],
                   policy, pooling: str = "cls") -> list[dict]:
    """One record per (ids, types) example: tokens, cumulative attention [L, n], class
    probabilities [L, C], the exit layer under `policy`, and each layer's answer."""
    records = []
    fn = cls_attention_fn(encoder, pooling)
    for (ids, types), toks in zip(examples, tokens):
        att, outs = cls_attention_and_outputs(fn, params, ids, types)
        z = np.exp(outs - outs.max(-1, keepdims=True))
        probs = z / z.sum(-1, keepdims=True)
        records.append({"tokens": list(toks), "cumulative_attention": cumulative_attention(att),
                        "probabilities": probs, "exit_layer": exit_layer(policy, outs),
                        "answers": probs.argmax(-1)})
    return records


def write_elbert_report(records: Sequence[dict], out_dir, label_names=None, labels=None,
                        title: str = "") -> dict:
    """Writes elbert_<i>.png, elbert.html and elbert.json; returns the JSON summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxit.interpret.render import heatmap_html, html_page, save_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(label_names) if label_names else None
    sections, rows = [], []
    for i, r in enumerate(records):
        cum, probs, e = r["cumulative_attention"], r["probabilities"], r["exit_layer"]
        L, n = cum.shape
        name = (lambda c: names[c] if names else str(c))
        gold = None if labels is None else int(labels[i])
        head = (f"example {i}: exit at layer {e} of {L}, answer {name(int(r['answers'][e - 1]))}"
                f" (full depth: {name(int(r['answers'][-1]))})"
                + ("" if gold is None else f", label {name(gold)}"))
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(6.0, 0.45 * n) + 4.0, 3.2),
                                       gridspec_kw={"width_ratios": [max(n, 4), 6]})
        # the colour scale is the words': [CLS] and [SEP] absorb most attention and saturate
        words = cum[:, 1:-1] if n > 2 else cum
        ax1.imshow(cum, aspect="auto", cmap="Blues", origin="lower", vmin=0.0,
                   vmax=float(words.max()) or None, extent=(-0.5, n - 0.5, 0.5, L + 0.5))
        ax1.axhline(e, color="crimson", lw=1.5, ls="--")
        ax1.set_xticks(range(n), r["tokens"], rotation=70, fontsize=7)
        ax1.set_yticks(range(1, L + 1))
        ax1.set_ylabel("layer")
        ax1.set_title("cumulative [CLS] attention (exit: dashed; colour scale of the words, "
                      "[CLS]/[SEP] saturate)", fontsize=8)
        for c in range(probs.shape[1]):
            ax2.plot(range(1, L + 1), probs[:, c], marker="o", label=name(c))
        ax2.axvline(e, color="crimson", lw=1.5, ls="--")
        ax2.set_xlabel("layer")
        ax2.set_ylim(0, 1)
        ax2.set_title("class probabilities", fontsize=8)
        ax2.legend(fontsize=7)
        fig.suptitle(head, fontsize=8)
        save_figure(fig, out / f"elbert_{i}.png")
        plt.close(fig)
        sections.append(heatmap_html(r["tokens"], cum, [f"layer {k + 1}" + (" (exit)" if k + 1 == e
                                                                          else "")
                                                        for k in range(L)], title=head))
        rows.append({"tokens": r["tokens"], "exit_layer": e, "label": gold,
                     "answers": [int(a) for a in r["answers"]],
                     "probabilities": probs.tolist(), "cumulative_attention": cum.tolist()})
    (out / "elbert.html").write_text(html_page(
        sections, title or "ELBERT: cumulative [CLS] attention per layer (row = layer)"))
    summary = {"examples": len(rows), "exit_layers": [r["exit_layer"] for r in rows]}
    (out / "elbert.json").write_text(json.dumps({**summary, "records": rows}, indent=2))
    return summary
