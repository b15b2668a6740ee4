"""Heatmaps of AdapLeR's contribution scores across layers (like seed 002 figure 4).

One row per CP ℓ (ℓ = 0 in front of layer 1): every input token, coloured by S̃^ℓ when the
token is still present at CP ℓ. Tokens that CP ℓ drops (S̃ < δ^ℓ) keep a faint colour and
are struck through; tokens dropped at an earlier layer are grey. So the highlighted
tokens of row ℓ are exactly those layer ℓ + 1 processes. Optionally, human-rationale tokens
are underlined.

Colour intensity per row: S̃ / max S̃ of the row (rows have different numbers of tokens, so
raw softmax values are not comparable across rows); the raw S̃ is in each token's tooltip
(HTML). PNG: a [layers x tokens] grid with the same scaling and grey cells for dropped
tokens, for the first `max_tokens` tokens; rationale tokens have bold red labels.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxit.interpret.render import save_figure

_KEPT = (31, 119, 180)  # blue (rgb)


def _check(tokens: Sequence[str], scores, kept) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, np.float64)
    kept = np.asarray(kept).astype(bool)
    if scores.ndim != 2 or scores.shape[1] != len(tokens):
        raise ValueError(f"scores must be [layers, {len(tokens)} tokens], got {scores.shape}")
    if kept.shape != scores.shape:
        raise ValueError(f"kept {kept.shape} and scores {scores.shape} differ in shape")
    if len(tokens) == 0:
        raise ValueError("cannot render an example with no tokens")
    return scores, kept


def row_scaled(scores: np.ndarray) -> np.ndarray:
    """[L, n] S̃ (NaN = not present) -> S̃ / row max, NaN kept."""
    s = np.asarray(scores, np.float64)
    with np.errstate(invalid="ignore", all="ignore"):
        m = np.nanmax(np.where(np.isnan(s), -np.inf, s), axis=1, keepdims=True)
    return s / np.where(np.isfinite(m) & (m > 0), m, 1.0)


def cp_heatmap_html(tokens: Sequence[str], scores, kept, title: str = "",
                    rationale: Sequence[int] | np.ndarray | None = None,
                    row_labels: Sequence[str] | None = None) -> str:
    """An HTML fragment: one line per CP layer. tokens [n]; scores [L, n] S̃ (NaN where the
    token was dropped earlier); kept [L, n] bool (the token runs through layer ℓ + 1);
    rationale [n] 0/1 (underlined) or None. Text is HTML-escaped."""
    scores, kept = _check(tokens, scores, kept)
    L = scores.shape[0]
    labels = list(row_labels) if row_labels is not None else [
        f"CP {l} &rarr; layer {l + 1}: {int(kept[l].sum())}/{len(tokens)}" for l in range(L)]
    if len(labels) != L:
        raise ValueError(f"{len(labels)} row labels for {L} rows")
    rat = np.zeros(len(tokens), bool) if rationale is None else np.asarray(rationale).astype(bool)
    if rat.shape != (len(tokens),):
        raise ValueError(f"rationale must have {len(tokens)} entries, got {rat.shape}")
    scaled = row_scaled(scores)
    r, g, b = _KEPT
    lines = [f"<h3>{html.escape(title)}</h3>" if title else ""]
    for l in range(L):
        spans = []
        for i, tok in enumerate(tokens):
            t = html.escape(str(tok))
            deco = "text-decoration: underline;" if rat[i] else ""
            if np.isnan(scores[l, i]):
                style, tip = f"color: #bbb;{deco}", "dropped earlier"
            else:
                a = float(np.clip(scaled[l, i], 0.0, 1.0))
                tip = f"S={scores[l, i]:.4g}"
                if kept[l, i]:
                    style = f"background: rgba({r}, {g}, {b}, {a:.3f});{deco}"
                else:
                    style = (f"background: rgba(150, 150, 150, {0.35 * a:.3f}); color: #888; "
                             f"text-decoration: line-through{' underline' if rat[i] else ''};")
                    tip += " (dropped here)"
            spans.append(f'<span title="{tip}" style="{style} padding: 1px 2px; '
                         f'border-radius: 3px;">{t}</span>')
        lines.append(f'<div style="margin: 3px 0;"><span style="display: inline-block; '
                     f'width: 14em; color: #555; font-size: 85%;">{labels[l]}</span>'
                     + " ".join(spans) + "</div>")
    return '<div style="font-family: sans-serif; line-height: 1.9;">' + "\n".join(lines) + "</div>"


def html_document(sections: Sequence[str], title: str = "contribution scores") -> str:
    t = html.escape(title)
    legend = ("<p style='font-family: sans-serif; color: #555;'>Blue: kept for the next "
              "layer (intensity = S&#771; / the row's max); struck through: dropped by this "
              "layer's CP; grey: dropped earlier; underlined: human rationale.</p>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{t}</title></head>"
            f"<body><h2 style='font-family: sans-serif;'>{t}</h2>{legend}"
            + "\n<hr>\n".join(sections) + "</body></html>\n")


def write_cp_heatmap_png(tokens: Sequence[str], scores, kept, path, title: str = "",
                         max_tokens: int = 80, rationale=None) -> Path:
    """PNG grid [layers x tokens] (first `max_tokens` tokens): colour = S̃ / row max for kept
    tokens, a light struck-through cell for tokens dropped by that row's CP, grey once
    dropped; human-rationale tokens (`rationale` [n] 0/1) get bold red labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores, kept = _check(tokens, scores, kept)
    n = min(len(tokens), max_tokens)
    tokens = [str(t) for t in tokens[:n]]
    scaled = row_scaled(scores)[:, :n]
    kept = kept[:, :n]
    L = scaled.shape[0]
    shown = np.ma.masked_invalid(np.where(kept, scaled, np.nan))
    cut = np.ma.masked_invalid(np.where(~kept & ~np.isnan(scaled), scaled, np.nan))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.28 * n + 1.5), 0.45 * L + 1.6))
    ax.set_facecolor("#dddddd")
    cmap = matplotlib.colormaps["Blues"]
    im = ax.imshow(shown, aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.imshow(cut, aspect="auto", cmap=matplotlib.colormaps["Greys"], vmin=0.0, vmax=2.5,
              interpolation="nearest")
    for l, i in zip(*np.nonzero(~kept & ~np.isnan(scaled))):
        ax.plot([i - 0.45, i + 0.45], [l, l], color="#555", lw=0.8)  # struck through
    ax.set_xticks(range(n))
    ax.set_xticklabels(tokens, rotation=90, fontsize=7)
    if rationale is not None:
        for lab, r in zip(ax.get_xticklabels(), np.asarray(rationale).astype(bool)[:n]):
            if r:
                lab.set_color("#b00000")
                lab.set_fontweight("bold")
    ax.set_yticks(range(L))
    ax.set_yticklabels([f"CP {l} ({int(kept[l].sum())})" for l in range(L)], fontsize=7)
    ax.set_ylabel("layer (kept tokens)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01, label="S̃ / row max")
    return save_figure(fig, path, dpi=130)


def write_cp_heatmaps(items: Sequence[dict], out_dir, title: str = "contribution scores",
                      max_tokens: int = 80) -> dict:
    """Writes `cp_heatmaps.html` (all items) and `cp_heatmap_<k>.png` per item into
    `out_dir`. Each item: {"tokens", "scores" [L, n], "kept" [L, n], optional "title",
    "rationale" [n]}. Returns {"html": path, "png": [paths]}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections, pngs = [], []
    for k, it in enumerate(items):
        sections.append(cp_heatmap_html(it["tokens"], it["scores"], it["kept"],
                                        it.get("title", ""), it.get("rationale")))
        pngs.append(write_cp_heatmap_png(it["tokens"], it["scores"], it["kept"],
                                         out / f"cp_heatmap_{k}.png", it.get("title", ""),
                                         max_tokens, it.get("rationale")))
    page = out / "cp_heatmaps.html"
    page.write_text(html_document(sections, title), encoding="utf-8")
    return {"html": page, "png": pngs}
