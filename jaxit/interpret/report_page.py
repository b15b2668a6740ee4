"""One self-contained HTML report page (`report.html`) for `jaxit demo` and `jaxit sweep`:
result tables, the trade-off plots and any attribution / kept-token heatmaps, with every
image inlined as a base64 PNG data URI and the CSS inline, so that the page opens offline
from anywhere (no scripts, no network)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table.result { border-collapse: collapse; margin: 0.6em 0 1em 0; font-size: 0.9em; }
table.result th, table.result td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; }
table.result th { background: #eee; } table.result td:first-child { text-align: left; }
img.plot { max-width: 560px; margin: 4px; border: 1px solid #ddd; vertical-align: top; }
p.note { font-size: 0.9em; color: #555; max-width: 900px; }
"""


def _cell(v) -> str:
    """A table cell's text: floats to 3 significant decimals, None blank."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def table_html(columns: Sequence[str], rows: Sequence[Sequence], caption: str = "") -> str:
    """An HTML table (class "result") with a header row and one row per entry of `rows`."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in r) + "</tr>"
                   for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f'<table class="result">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def image_html(path, alt: str = "") -> str:
    """An <img> with the PNG at `path` inlined as a data URI ("" when the file is missing)."""
    p = Path(path)
    if not p.is_file():
        return ""
    data = base64.b64encode(p.read_bytes()).decode("ascii")
    return (f'<img class="plot" alt="{html.escape(alt or p.stem)}" '
            f'src="data:image/png;base64,{data}">')


def section_html(heading: str, tables: Sequence[str] = (), images: Sequence = (),
                 notes: Sequence[str] = ()) -> str:
    """A <section>: heading, explanatory notes, already rendered tables, then the images."""
    parts = [f"<section><h2>{html.escape(heading)}</h2>"]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    parts += list(tables)
    imgs = [image_html(p) for p in images]
    parts += [f"<div>{''.join(i for i in imgs if i)}</div>", "</section>"]
    return "\n".join(parts)


def write_page(path, title: str, sections: Sequence[str], intro: Sequence[str] = ()) -> Path:
    """Writes the self-contained page to `path` and returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in intro)
    path.write_text(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>{notes}\n" + "\n".join(sections)
        + "\n</body></html>\n", encoding="utf-8")
    return path


NOTE_WALL = ("wall ×: measured wall-clock speed-up over the static model (b=1: one example "
             "at a time; batched: the batched engine against the static model batched the "
             "same way).")
OPERATING_COLUMNS = ("policy", "threshold", "η scale", "score", "avg exit", "kept tokens",
                     "FLOPs ×", "wall × b=1", "wall × batched", "batched wall/FLOPs")


def operating_rows(report: dict) -> list[list]:
    """One row per policy of a sweep report (`jaxit.sweep.run_sweep`, or the depth + width
    sweep's three axes, which have an η scale and a kept-token fraction): its operating point."""
    rows = []
    for name, p in report.get("operating_points", {}).items():
        wall, batched = p.get("wallclock") or {}, p.get("batched") or {}
        rows.append([name, p.get("threshold"), p.get("eta_scale"), p.get("score"),
                     p.get("avg_exit_layer"), p.get("kept_fraction", 1.0), p.get("flops_speedup"), wall.get("wall_speedup"),
                     batched.get("wall_speedup"), batched.get("wall_over_flops")])
    return rows


def heatmap_images(run_dir, limit: int = 8) -> list[Path]:
    """The attribution heatmaps (DACT: `jaxit interpret` writes `interpret/attributions_<i>.png`)
    and kept-token heatmaps (AdapLeR: `jaxit lr-eval` writes them under `lr_eval/<task>/`)
    of a run, at most `limit`, in path order."""
    run_dir = Path(run_dir)
    found = sorted((run_dir / "interpret").glob("attributions_*.png"))
    found += sorted(p for p in (run_dir / "lr_eval").rglob("*.png")
                    if p.name != "rationale_curves.png") if (run_dir / "lr_eval").is_dir() else []
    return found[:limit]


def sweep_section(report: dict, run_dir, heading: str) -> str:
    """The section of one swept run: full-model and layer-wise scores, the operating point
    per policy, its trade-off plot and any heatmaps of the run."""
    run_dir = Path(run_dir)
    layerwise = report.get("layerwise") or []
    tables = [table_html(("full model", *[f"layer {i + 1}" for i in range(len(layerwise))]),
                         [[report.get("full_model_score"), *layerwise]],
                         caption="score of the full model and of every exit"),
              table_html(OPERATING_COLUMNS, operating_rows(report),
                         caption="operating points: largest FLOPs speed-up within tolerance")]
    images = [p for p in (run_dir / "tradeoff.png", run_dir / "sweep" / "tradeoff.png")
              if p.is_file()] + heatmap_images(run_dir)
    return section_html(heading, tables, images)


def write_sweep_page(workdir, report: dict, title: str = "") -> Path:
    """`jaxit sweep`'s `report.html` in the run's workdir."""
    workdir = Path(workdir)
    return write_page(workdir / "report.html", title or f"jaxit sweep: {workdir.name}",
                      [sweep_section(report, workdir, "exit analysis (dev split)")],
                      intro=[NOTE_WALL])
