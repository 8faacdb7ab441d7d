"""hear-edge: run the HEAR audio classifier on small CPUs, with no torch at run time."""

import logging

from .errors import (AudioDeviceError, AudioTooShortError, BackendUnavailableError, BundleError, CheckpointError,
                     ClipTooLongError, ConfigError, DataFolderError, HearEdgeError, InferenceError,
                     InvalidArgumentError, InvalidAudioError, LabelError, ParityError, SelfTestError,
                     TeacherUnavailableError)
from .run.classifier import Category, ClassificationResult, Embeddings, HearEdge
from .run.streaming import ClassificationStream
from .signal.frontend import compute_features

__version__ = "0.1.0"

logging.getLogger("hear_edge").addHandler(logging.NullHandler())

__all__ = ["HearEdge", "ClassificationResult", "ClassificationStream", "Category", "Embeddings", "compute_features",
           "HearEdgeError", "InvalidAudioError", "AudioTooShortError", "ClipTooLongError", "InvalidArgumentError",
           "CheckpointError", "ConfigError", "BundleError", "LabelError", "ParityError", "BackendUnavailableError",
           "SelfTestError", "AudioDeviceError", "InferenceError", "DataFolderError",
           "TeacherUnavailableError", "__version__"]
