"""HEAR's three config objects under their official field names, readable without torch."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hear_edge.errors import ConfigError


@dataclass
class AcousticModelConfig:
    hidden_size: int = 384
    intermediate_size: int = 1536
    num_attention_heads: int = 4
    num_transformer_layers: int = 6
    max_length: int = 300
    overlap: int = 50
    dropout_probability: float = 0.1
    spectrogram_sampling_rate: int = 16000
    spectrogram_n_fft: int = 1024
    # hear-edge extension for trimmed models (hear_edge.training.trim): heads and FFN channels kept per layer.
    # None means every layer has num_attention_heads and intermediate_size, as the official config.
    layer_attention_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def heads_in_layer(self, layer: int) -> int:
        return self.num_attention_heads if self.layer_attention_heads is None else self.layer_attention_heads[layer]

    def intermediate_size_in_layer(self, layer: int) -> int:
        return self.intermediate_size if self.layer_intermediate_sizes is None \
            else self.layer_intermediate_sizes[layer]


_EXTENSION_FIELDS = ("layer_attention_heads", "layer_intermediate_sizes")


@dataclass
class TaskModelConfig:
    hidden_size: int = 384
    intermediate_size: int = 1536
    # The official TaskModel builds one nn.TransformerEncoderLayer whatever this says.
    num_transformer_layers: int = 1
    num_attention_heads: int = 4
    dropout_rate: float = 0.1
    max_length: int = 1500


@dataclass
class ClassificationDecoderConfig:
    num_classes: int
    hidden_size: int = 384
    dropout_rate: float = 0.1


@dataclass
class HearConfig:
    """The official `config.json`: one object per part of the model."""

    acoustic_model: AcousticModelConfig = field(default_factory=AcousticModelConfig)
    task_model: TaskModelConfig = field(default_factory=TaskModelConfig)
    classification_decoder: ClassificationDecoderConfig = field(
        default_factory=lambda: ClassificationDecoderConfig(num_classes=1)
    )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        data = dataclasses.asdict(self)
        for name in _EXTENSION_FIELDS:  # absent unless trimmed, so an untrimmed config stays official
            if data["acoustic_model"][name] is None:
                del data["acoustic_model"][name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "HearConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object with keys acoustic_model, "
                              f"task_model, classification_decoder; got {type(data).__name__}.")
        sections = {
            "acoustic_model": AcousticModelConfig,
            "task_model": TaskModelConfig,
            "classification_decoder": ClassificationDecoderConfig,
        }
        unknown = sorted(set(data) - set(sections))
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {unknown}; expected {sorted(sections)}.")
        parts = {}
        for name, section_cls in sections.items():
            values = data.get(name, {})
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: section {name!r} must be an object, got {type(values).__name__}.")
            known = {f.name for f in dataclasses.fields(section_cls)}
            extra = sorted(set(values) - known)
            if extra:
                raise ConfigError(f"{source}: section {name!r} has unknown field(s) {extra}; "
                                  f"official fields are {sorted(known)}.")
            if name == "classification_decoder" and "num_classes" not in values:
                raise ConfigError(f"{source}: classification_decoder.num_classes is required, as in the "
                                  f"official ClassificationDecoderConfig.")
            parts[name] = section_cls(**values)
        config = cls(**parts)
        config.validate(source)
        return config

    @classmethod
    def from_json(cls, path: str | Path) -> "HearConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist.") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"config file {path} is not valid JSON: {error}.") from None
        return cls.from_dict(data, source=str(path))

    def validate(self, source: str = "config") -> None:
        acoustic, task = self.acoustic_model, self.task_model
        for section, name in ((acoustic, "acoustic_model"), (task, "task_model")):
            if section.hidden_size % section.num_attention_heads:
                raise ConfigError(f"{source}: {name}.hidden_size {section.hidden_size} is not divisible "
                                  f"by num_attention_heads {section.num_attention_heads}.")
        for name, values, most in (("layer_attention_heads", acoustic.layer_attention_heads,
                                    acoustic.num_attention_heads),
                                   ("layer_intermediate_sizes", acoustic.layer_intermediate_sizes,
                                    acoustic.intermediate_size)):
            if values is None:
                continue
            if not isinstance(values, list) or len(values) != acoustic.num_transformer_layers or not all(
                    isinstance(v, int) and 0 <= v <= most for v in values):
                raise ConfigError(f"{source}: acoustic_model.{name} must list {acoustic.num_transformer_layers} "
                                  f"integers between 0 and {most} (one per layer), got {values!r}.")
        if not 0 < acoustic.overlap < acoustic.max_length:
            raise ConfigError(f"{source}: acoustic_model.overlap must be between 1 and max_length-1 "
                              f"({acoustic.max_length - 1}), got {acoustic.overlap}.")
        if self.classification_decoder.num_classes < 1:
            raise ConfigError(f"{source}: classification_decoder.num_classes must be >= 1.")
