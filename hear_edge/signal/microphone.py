"""Microphone input for `hear-edge stream --mic`, through sounddevice (PortAudio), the `mic` extra."""

from __future__ import annotations

import numpy as np

from hear_edge.errors import AudioDeviceError

# As every extra is named (hear-edge is installed from a checkout or a built wheel, not an index).
MIC_EXTRA = "pip install '.[mic]' in a hear-edge checkout (or 'hear-edge[mic]' from a built wheel)"
PORTAUDIO_PACKAGE = "libportaudio2"
LIST_HINT = "`hear-edge stream --list-devices` lists them"


def _sounddevice():
    try:
        import sounddevice
    except ImportError:
        raise AudioDeviceError(f"the microphone needs the sounddevice package, which is not installed: "
                               f"{MIC_EXTRA}.") from None
    except OSError as error:  # sounddevice's import raises OSError('PortAudio library not found')
        raise AudioDeviceError(f"the microphone needs the PortAudio library, which was not found ({error}): "
                               f"sudo apt-get install {PORTAUDIO_PACKAGE} on Debian, Ubuntu or Raspberry Pi OS "
                               f"(brew install portaudio on macOS).") from None
    return sounddevice


def _device_arg(device):
    """--device as sounddevice takes it: an index (digits) or part of a name."""
    if device is None or isinstance(device, int):
        return device
    text = str(device).strip()
    return int(text) if text.isdigit() else text


def input_devices() -> list[dict]:
    """The devices with input channels: index, name, max_input_channels, default_samplerate, default (bool)."""
    sd = _sounddevice()
    try:
        devices = list(sd.query_devices())
        default_input = sd.default.device[0]
    except sd.PortAudioError as error:
        raise AudioDeviceError(f"PortAudio cannot list the audio devices ({error}); check that the sound "
                               f"system is running.") from None
    return [{"index": int(d.get("index", i)), "name": d["name"], "max_input_channels": int(d["max_input_channels"]),
             "default_samplerate": float(d["default_samplerate"]), "default": int(d.get("index", i)) == default_input}
            for i, d in enumerate(devices) if d.get("max_input_channels", 0) > 0]


class Microphone:
    """One input device, mono float32 blocks at its default rate. Use as a context manager.

    Args:
        device: None for the default input, an index, or part of a device's name (as --device).
        block_seconds: audio per `read`.

    Raises:
        AudioDeviceError: sounddevice or PortAudio missing, no input device, no such device, or one
            that cannot be opened; each says what to install or plug in.
    """

    def __init__(self, device=None, block_seconds: float = 0.1):
        self._sd = sd = _sounddevice()
        device = _device_arg(device)
        if device is None and not input_devices():
            raise AudioDeviceError("no microphone: PortAudio finds no input device. Plug in (or enable) a "
                                   "microphone, then check with `hear-edge stream --list-devices`.")
        try:
            info = sd.query_devices(device, kind="input") if device is not None else sd.query_devices(kind="input")
        except (sd.PortAudioError, ValueError) as error:
            where = f"--device {device}" if device is not None else "the default input device"
            raise AudioDeviceError(f"{where} cannot be used ({error}); pick another with --device, "
                                   f"{LIST_HINT}.") from None
        if info.get("max_input_channels", 0) < 1:
            raise AudioDeviceError(f"--device {device} ({info['name']}) has no input channels; {LIST_HINT}.")
        self.device = device
        self.name = info["name"]
        self.rate_hz = int(info["default_samplerate"])
        self.block_frames = max(1, round(block_seconds * self.rate_hz))
        self._stream = None

    def __enter__(self) -> "Microphone":
        try:
            self._stream = self._sd.InputStream(device=self.device, samplerate=self.rate_hz, channels=1,
                                                dtype="float32")
            self._stream.start()
        except self._sd.PortAudioError as error:
            raise AudioDeviceError(f"the input device {self.name} cannot be opened ({error}); is another "
                                   f"program using it? {LIST_HINT}.") from None
        return self

    def read(self) -> np.ndarray:
        """The next block, (frames, 1) float32; blocks until it is recorded."""
        block, _overflowed = self._stream.read(self.block_frames)
        return np.asarray(block, dtype=np.float32)

    def __exit__(self, *exc) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
