"""jaxit: adaptive inference (early exit, token dropping) for BERT-family encoders in JAX."""

from jaxit.batch import Batch

__version__ = "0.1.0"
__all__ = ["Batch", "__version__", "load_predictor"]


def __getattr__(name):
    if name == "load_predictor":  # imported on first use: `import jaxit` stays light
        from jaxit.inference.predictor import load_predictor

        return load_predictor
    raise AttributeError(f"module 'jaxit' has no attribute {name!r}")
