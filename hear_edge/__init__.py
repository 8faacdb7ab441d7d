"""hear-edge: run the HEAR audio classifier on small CPUs, with no torch at run time."""

import logging

from .classifier import Category, ClassificationResult, Embeddings, HearEdge
from .errors import HearEdgeError
from .frontend import compute_features

__version__ = "0.1.0"

logging.getLogger("hear_edge").addHandler(logging.NullHandler())

__all__ = ["HearEdge", "ClassificationResult", "Category", "Embeddings", "HearEdgeError",
           "compute_features", "__version__"]
