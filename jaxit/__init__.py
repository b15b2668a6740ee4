"""jaxit: adaptive inference (early exit, token dropping) for BERT-family encoders in JAX."""

from jaxit.batch import Batch

__version__ = "0.1.0"
__all__ = ["Batch", "__version__"]
