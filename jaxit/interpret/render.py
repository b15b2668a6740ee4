"""Token heatmaps of attributions: HTML (inline colours, escaped text) and PNG (matplotlib).

A heatmap is a grid of rows (e.g. "output", then one row per layer's halting value) over the
same n tokens. Colours follow the DACT-BERT paper's figures: green for positive, red for
negative attribution, intensity |value| / scale. `normalize="row"` scales each row by its
own largest |value| (rows of very different sizes stay readable: halting rows vs the
output); `"global"` uses one scale for the whole grid.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

NORMALIZE = ("row", "global")
_POS, _NEG = (0, 160, 0), (210, 0, 0)  # green, red (rgb)


def _rows(tokens: Sequence[str], rows) -> np.ndarray:
    rows = np.asarray(rows, np.float64)
    if rows.ndim == 1:
        rows = rows[None]
    if rows.ndim != 2 or rows.shape[1] != len(tokens):
        raise ValueError(f"attributions must be [rows, {len(tokens)} tokens], got {rows.shape}")
    if len(tokens) == 0:
        raise ValueError("cannot render an example with no tokens")
    if not np.isfinite(rows).all():
        raise ValueError("attributions contain NaN or inf")
    return rows


def scaled(rows, normalize: str = "row") -> np.ndarray:
    """rows [R, n] -> values in [-1, 1] divided by the row's (or the grid's) max |value|;
    an all-zero row stays zero."""
    rows = np.asarray(rows, np.float64)
    if normalize == "row":
        scale = np.abs(rows).max(axis=1, keepdims=True)
    elif normalize == "global":
        scale = np.full((rows.shape[0], 1), np.abs(rows).max() if rows.size else 0.0)
    else:
        raise ValueError(f"unknown normalize {normalize!r}; choose from {NORMALIZE}")
    return rows / np.where(scale > 0, scale, 1.0)


def css_color(v: float) -> str:
    """A scaled value in [-1, 1] -> an inline CSS rgba colour (green +, red -)."""
    r, g, b = _POS if v >= 0 else _NEG
    return f"rgba({r}, {g}, {b}, {min(abs(float(v)), 1.0):.3f})"


def heatmap_html(tokens: Sequence[str], rows, row_labels: Sequence[str] | None = None,
                 title: str = "", normalize: str = "row") -> str:
    """An HTML fragment: one line of coloured tokens per row (the raw value in each token's
    tooltip). Tokens, labels and the title are HTML-escaped."""
    rows = _rows(tokens, rows)
    labels = list(row_labels) if row_labels is not None else [""] * rows.shape[0]
    if len(labels) != rows.shape[0]:
        raise ValueError(f"{len(labels)} row labels for {rows.shape[0]} rows")
    s = scaled(rows, normalize)
    out = ['<div class="heatmap">']
    if title:
        out.append(f"<h3>{html.escape(title)}</h3>")
    out.append("<table>")
    for label, raw, row in zip(labels, rows, s):
        cells = "".join(
            f'<span style="background-color: {css_color(v)}; padding: 1px 2px; margin: 1px;'
            f' border-radius: 2px" title="{r:+.4g}">{html.escape(tok)}</span> '
            for tok, v, r in zip(tokens, row, raw))
        out.append(f'<tr><td style="white-space: nowrap; padding-right: 8px; '
                   f'font-family: monospace">{html.escape(label)}</td><td>{cells}</td></tr>')
    out.append("</table></div>")
    return "\n".join(out)


def html_page(sections: Sequence[str], title: str = "attributions") -> str:
    """A standalone HTML page around `heatmap_html` fragments."""
    head = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>"
            f"{html.escape(title)}</title></head>\n<body style=\"font-family: sans-serif\">\n"
            f"<h2>{html.escape(title)}</h2>\n<p>green: positive attribution, red: negative; "
            f"intensity relative to the row's largest |attribution| (hover a token for its "
            f"value).</p>\n")
    return head + "\n<hr>\n".join(sections) + "\n</body></html>\n"


def save_figure(fig, path, dpi: int = 110) -> Path:
    """Lays out, writes (creating the folder) and closes a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def write_heatmap_png(tokens: Sequence[str], rows, path, row_labels: Sequence[str] | None = None,
                      title: str = "", normalize: str = "row") -> Path:
    """A PNG heatmap: one row per attribution row, one column per token (labels on the x
    axis, drawn as plain text: no mathtext), red-yellow-green diverging at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(tokens, rows)
    labels = list(row_labels) if row_labels is not None else [""] * rows.shape[0]
    s = scaled(rows, normalize)
    n, r = len(tokens), rows.shape[0]
    width = max(5.0, 0.32 * n + 2.5)
    title = textwrap.fill(title, width=int(width * 11)) if title else ""
    height = max(1.6, 0.42 * r + 1.6) + 0.2 * title.count("\n")
    fig, ax = plt.subplots(figsize=(width, height))
    im = ax.imshow(s, cmap="RdYlGn", vmin=-1.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(n))
    ax.set_xticklabels(list(tokens), rotation=90, fontsize=8, parse_math=False)
    ax.set_yticks(range(r))
    ax.set_yticklabels(labels, fontsize=8, parse_math=False)
    if title:
        ax.set_title(title, fontsize=9, parse_math=False)
    fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01,
                 label="attribution / row max" if normalize == "row" else "attribution / max")
    return save_figure(fig, path, dpi=110)
