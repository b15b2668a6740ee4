"""Issue #16 item 5: configs are checked before any work, and user mistakes reach the
`jaxit` command's user as one line `jaxit <cmd>: error: ...` with exit status 2."""

import os
import subprocess
import sys

import ml_collections
import pytest

from jaxit.configs import base_config, demo_config, tiny_config
from jaxit.errors import ConfigError, UnknownNameError
from jaxit.train.validate import check_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_shipped_configs_pass():
    for c in (base_config(), tiny_config(), demo_config()):
        check_config(c, num_devices_available=1)


@pytest.mark.parametrize("field,value,message", [
    ("train.learning_rate", -1e-3, "train.learning_rate=-0.001: must be > 0"),
    ("train.learning_rate", 0.0, "must be > 0"),
    ("train.batch_size", 0, "train.batch_size=0: must be >= 1"),
    ("train.warmup_fraction", 1.5, "must be in [0, 1]"),
    ("train.adam_b2", 1.0, "must be in [0, 1)"),
    ("method.stage1_fraction", -0.1, "must be in [0, 1]"),
    ("method.tau", -5e-3, "method.tau=-0.005: must be >= 0"),
    ("method.pooling", "maen", "one of 'cls', 'mean' (did you mean mean?)"),
    ("method.elbert_heads", "per-layer", "did you mean per_layer?"),
    ("method.strategy", "jont", "did you mean joint?"),
    ("data.source", "hf_hub", "one of 'local', 'hf', 'tfds', 'synthetic'"),
    ("data.buckets", (32, 16), "must be increasing"),
    ("save_every", 0, "save_every=0: must be >= 1"),
    ("log_every", 2.5, "must be an integer"),
])
def test_out_of_range_values(field, value, message):
    c = ml_collections.ConfigDict(tiny_config().to_dict(), type_safe=False)  # as hparams.json
    group, _, name = field.rpartition(".")
    (c[group] if group else c)[name] = value
    with pytest.raises(ConfigError) as e:
        check_config(c, num_devices_available=1)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_names_fields_and_devices():
    c = tiny_config()
    c.method.name = "berxt"
    with pytest.raises(UnknownNameError, match="unknown method 'berxt' .did you mean berxit"):
        check_config(c, 1)
    c = tiny_config()
    c.task = "sst3"
    with pytest.raises(UnknownNameError, match="did you mean sst2"):
        check_config(c, 1)
    c = tiny_config()  # a Python caller (or an edited hparams.json) with a misspelt field
    c.unlock()
    c.train.lerning_rate = 1e-3
    with pytest.raises(ConfigError, match=r"unknown config field train.lerning_rate "
                                          r"\(did you mean train.learning_rate\?\)"):
        check_config(c, 1)
    c = tiny_config()
    c.train.batch_size = 6
    with pytest.raises(ConfigError, match="batch_size=6 is not divisible by the 4 devices"):
        check_config(c, num_devices_available=4)
    c.num_devices = 8
    with pytest.raises(ConfigError, match="num_devices=8: only 4 devices"):
        check_config(c, num_devices_available=4)
    c = tiny_config()  # the demo's partial method block: missing fields take their defaults
    c.method = type(c.method)({"name": "berxit", "strategy": "alternating"})
    check_config(c, 1)


def _jaxit(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", JAXIT_CACHE_DIR="off")
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, "-m", "jaxit.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_cli_user_errors_are_one_line(tmp_path):
    """One process per case is slow, so one bad override per kind, in one command each."""
    cfg = "--config=experiments/configs/finetune.py:tiny"
    wd = f"--workdir={tmp_path / 'run'}"
    cases = [
        (["train", cfg, wd, "--config.train.lerning_rate=1e-3"],
         ("jaxit train: error: unknown config field train.lerning_rate (did you mean "
          "train.learning_rate?)")),
        (["train", cfg, wd, "--config.train.learning_rate=-1e-3"],
         "jaxit train: error: config.train.learning_rate=-0.001: must be > 0"),
        (["eval", f"--workdir={tmp_path / 'none'}"], "jaxit eval: error: "),
        (["train", "--config=experiments/configs/nope.py", wd],
         "jaxit train: error: --config: [Errno 2] No such file"),
    ]
    for args, want in cases:
        p = _jaxit(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.strip().splitlines() == [p.stderr.strip()] and want in p.stderr, p.stderr
    p = _jaxit(*cases[1][0], "--verbose")  # the traceback, on request
    assert p.returncode != 0 and "Traceback (most recent call last)" in p.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing was started
