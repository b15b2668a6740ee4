"""Test setup in the style of equinox/big_vision: 4 fake CPU devices, strict dtype promotion,
and fixtures for the offline shared data and weights."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import pytest

from jaxit import resources

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "standard_promotion: run with standard dtype promotion (optax's Adam bias "
        "correction mixes Python floats with int32 counts, which strict promotion rejects)")


@pytest.fixture(scope="session", autouse=True)
def _xla_cache(tmp_path_factory):
    """One persistent XLA compilation cache for this session (in its temporary folder, so
    nothing is shared between sessions): the many tiny runs compile the same train and eval
    steps from fresh jit closures, and an identical program is then loaded, not recompiled.
    Tracing still happens, so trace counts (`compiles_after_warmup`) are unchanged.
    JAXIT_TEST_XLA_CACHE=off turns it off."""
    if os.environ.get("JAXIT_TEST_XLA_CACHE", "") == "off":
        yield
        return
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield


@pytest.fixture(autouse=True)
def _dtype_promotion(request):
    """Strict dtype promotion for every test except those marked `standard_promotion`."""
    mode = "standard" if request.node.get_closest_marker("standard_promotion") else "strict"
    with jax.numpy_dtype_promotion(mode):
        yield


@pytest.fixture(scope="session")
def shared_dir():
    d = resources.shared_dir()
    assert d.is_dir(), f"shared folder not found at {d}; set JAXIT_SHARED"
    return d


@pytest.fixture(scope="session")
def minilm_dir(shared_dir):
    d = resources.model_dir()
    assert (d / "model.safetensors").is_file(), f"MiniLM checkpoint missing in {d}"
    return d


@pytest.fixture(scope="session")
def data_dir(shared_dir):
    return resources.data_dir()


@pytest.fixture(scope="session")
def peaked_classifier():
    """make(cfg, num_outputs=2) -> (encoder, params): a random encoder with a fine-tune head,
    its kernels ×3 so that attention is peaked (scores that differ across tokens)."""
    from jaxit.encoders import init_params, make_encoder
    from jaxit.methods.finetune import make_finetune

    def make(cfg, num_outputs=2):
        enc = make_encoder(cfg)
        m = make_finetune(enc, num_outputs, False)
        params = m.init(jax.random.PRNGKey(1), init_params(cfg, jax.random.PRNGKey(0)))
        return enc, jax.tree.map(lambda x: x * 3.0 if x.ndim == 2 else x, params)

    return make
