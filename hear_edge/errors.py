"""The hear_edge error hierarchy: every failure a user can cause is one of these."""

from __future__ import annotations


class HearEdgeError(Exception):
    """Base class of every error hear_edge raises on purpose."""


class InvalidAudioError(HearEdgeError, ValueError):
    """Audio that cannot be classified as given (empty, NaN, wrong dtype, rank or rate)."""


class InvalidArgumentError(HearEdgeError, ValueError):
    """An option out of its range: max_results, thresholds, list filters, backend, stream timing."""


class AudioTooShortError(InvalidAudioError):
    """Audio shorter than the frontend can frame."""


class ClipTooLongError(InvalidAudioError):
    """A clip longer than the reference Task Model's position table covers."""


class CheckpointError(HearEdgeError, ValueError):
    """A checkpoint that cannot be loaded: unreadable, unsafe, or not HEAR's key layout."""


class ConfigError(HearEdgeError, ValueError):
    """A config.json that is malformed or disagrees with the checkpoint."""


class BundleError(HearEdgeError, ValueError):
    """A bundle that is missing a file, fails its hash, or has an unknown manifest version."""


class LabelError(HearEdgeError, ValueError):
    """Labels that do not fit the model (count mismatch, unknown label in a list)."""


class ParityError(HearEdgeError):
    """An exported graph whose outputs differ from the reference beyond its gate."""


class DataFolderError(HearEdgeError, ValueError):
    """A training, calibration or golden-set folder that is missing or holds nothing usable."""


class InferenceError(HearEdgeError, RuntimeError):
    """A backend that fails running a graph on the inputs hear-edge prepared; names the backend and the graph."""


class BackendUnavailableError(HearEdgeError, ImportError):
    """A runtime backend whose package is not installed."""


class AudioDeviceError(HearEdgeError):
    """A microphone that cannot be opened: sounddevice or PortAudio missing, no input device, a bad device."""


class SelfTestError(HearEdgeError, RuntimeError):
    """A graph whose answer to its probe input, on the runtime here, is off beyond its precision's tolerance."""


class TeacherUnavailableError(BackendUnavailableError):
    """A fine-tuning teacher whose extra is not installed (`pip install "hear-edge[teacher]"`)."""
