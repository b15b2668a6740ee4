"""Dropout's masks (16-bit Threefry draws, `jaxit.encoders.transformer.dropout`): the keep
rate, independence between elements and keys, determinism, every key type, bad rates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxit.encoders.transformer import dropout

SHAPE = (64, 128, 130)  # 1,064,960 elements: an odd word count's tail included


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keep_rate_and_independence(rate):
    x = jnp.ones(SHAPE)
    y = np.asarray(jax.jit(lambda k: dropout(x, rate, k))(jax.random.key(0)))
    keep = y != 0
    n = keep.size
    assert abs(keep.mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n), keep.mean()
    np.testing.assert_allclose(y[keep], 1 / (1 - rate), rtol=1e-6)  # inverted scaling
    k = keep.ravel().astype(np.float64) - keep.mean()
    for lag in (1, 2, n // 2):  # neighbours, and the two halves of each 32-bit word
        corr = (k[:-lag] * k[lag:]).mean() / k.var()
        assert abs(corr) < 5 / np.sqrt(n - lag), (lag, corr)
    # whole rows are not copies of one another
    rows = keep.reshape(SHAPE[0], -1)
    assert len({r.tobytes() for r in rows}) == SHAPE[0]


def test_deterministic_per_key_and_independent_across_keys():
    x = jnp.ones((4096,))
    a, b = (np.asarray(dropout(x, 0.3, jax.random.key(1))) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    c = np.asarray(dropout(x, 0.3, jax.random.key(2)))
    agree = ((a != 0) == (c != 0)).mean()
    assert abs(agree - (0.7 ** 2 + 0.3 ** 2)) < 0.03, agree  # independent masks


def test_every_key_type_and_the_identity_cases():
    x = jnp.ones((1000,), jnp.bfloat16)
    for key in (jax.random.PRNGKey(0), jax.random.key(0),
                jax.random.key(0, impl="rbg"), jax.random.key(0, impl="unsafe_rbg")):
        y = dropout(x, 0.2, key)
        assert y.dtype == jnp.bfloat16 and 0.7 < float((y != 0).mean()) < 0.9
    assert dropout(x, 0.2, None) is x and dropout(x, 0.0, jax.random.key(0)) is x
    with pytest.raises(ValueError, match="dropout rate must be in"):
        dropout(x, 1.0, jax.random.key(0))
