"""report.html renders: headless Chromium shows its tables (DOM rows) and its inlined images
(a screenshot that is not blank, images with non-zero natural size), with no network."""

import re
import shutil
import subprocess

import numpy as np
import pytest

from jaxit.interpret import report_page as R

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (apt-get install -y chromium); "
                             ".ci/run installs it")


def _png(path, color):
    """A small plot-like PNG: a coloured block on white."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.imshow(np.tile(np.linspace(0, 1, 16), (8, 1)), cmap=color)
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


def _report():
    return {"full_model_score": 0.93, "layerwise": [0.7, 0.85, 0.9, 0.92, 0.93, 0.93],
            "operating_points": {
                "confidence": {"threshold": 0.9, "score": 0.925, "avg_exit_layer": 2.1,
                               "flops_speedup": 2.8, "wallclock": {"wall_speedup": 1.9},
                               "batched": {"wall_speedup": 2.6, "wall_over_flops": 0.93}},
                "entropy": {"threshold": 0.2, "score": 0.92, "avg_exit_layer": 2.0,
                            "flops_speedup": 2.9},
                "patience": {"threshold": 2, "score": 0.93, "avg_exit_layer": 3.5,
                             "flops_speedup": 1.7}}}


def _chromium(*args, timeout=90):
    p = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--no-first-run", *args],
                       capture_output=True, text=True, timeout=timeout, check=False)
    return p


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    (run / "sweep").mkdir()
    (run / "lr_eval" / "sst2").mkdir(parents=True)
    _png(run / "sweep" / "tradeoff.png", "viridis")
    _png(run / "lr_eval" / "sst2" / "cp_0.png", "Reds")  # an AdapLeR kept-token heatmap
    return R.write_sweep_page(run, _report(), title="test run")


def test_page_is_self_contained(page):
    text = page.read_text()
    assert "<script" not in text
    srcs = re.findall(r'src="([^"]*)"', text)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(href|src)="(https?:|//)', text)


@needs_chromium
def test_page_renders_tables_and_images(page, tmp_path):
    # the DOM after rendering: both tables with their rows, and the images decoded
    # (naturalWidth > 0 only for an image the browser could read) -- checked by a script
    # run inside the page copy, whose result the dumped DOM carries
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", (
        "<script>window.onload = () => { const n = [...document.images]"
        ".filter(i => i.complete && i.naturalWidth > 0).length;"
        " document.body.setAttribute('data-decoded', n); };</script></body>")))
    p = _chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    assert p.returncode == 0, p.stderr[-2000:]
    dom = p.stdout
    assert 'data-decoded="2"' in dom, "the browser did not decode both inlined images"
    tables = re.findall(r'<table class="result">(.*?)</table>', dom, re.DOTALL)
    assert len(tables) == 2
    body_rows = [re.findall(r"<tbody>(.*?)</tbody>", t, re.DOTALL)[0].count("<tr>") for t in tables]
    assert body_rows == [1, 3]  # layer-wise scores; one operating point per policy
    for policy in ("confidence", "entropy", "patience"):
        assert f"<td>{policy}</td>" in tables[1]
    assert "<td>2.600</td>" in tables[1]  # the batched wall-clock speed-up is shown

    shot = tmp_path / "shot.png"
    p = _chromium(f"--screenshot={shot}", "--window-size=1200,1400", page.as_uri())
    assert p.returncode == 0 and shot.is_file(), p.stderr[-2000:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"), np.float32)
    colourful = (img.max(-1) - img.min(-1)) > 60  # saturated pixels: only the plots have them
    assert img.std() > 10, "blank screenshot"
    assert colourful.mean() > 0.01, "no image visible in the screenshot"
