"""Run the reference model and the numpy frontend against a golden set of official outputs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hear_edge.errors import DataFolderError
from hear_edge.signal.frontend import compute_features

LOGIT_BOUND = 1e-4
FEATURE_BOUND = 1e-3
FRONTEND_FED_LOGIT_BOUND = 1e-3


@dataclass
class GoldenCase:
    name: str
    wav: np.ndarray
    log_mel: np.ndarray
    power_spectrum: np.ndarray
    logits: np.ndarray
    arrays: dict

    @classmethod
    def load(cls, path: Path) -> "GoldenCase":
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        return cls(path.stem, arrays["wav"], arrays["log_mel"], arrays["power_spectrum"],
                   arrays["logits"], arrays)


def golden_cases(golden_dir: str | Path) -> list[GoldenCase]:
    golden_dir = Path(golden_dir)
    if not (golden_dir / "cases.json").is_file():
        raise DataFolderError(f"{golden_dir} is not a golden set: it has no cases.json (see "
                            f"tests/data/golden/tiny for the layout).")
    names = json.loads((golden_dir / "cases.json").read_text())
    return [GoldenCase.load(golden_dir / f"{name}.npz") for name in names]


@dataclass
class CaseParity:
    case: str
    logits: float
    log_mel: float
    power_spectrum: float
    frontend_fed_logits: float

    @property
    def passed(self) -> bool:
        return (self.logits <= LOGIT_BOUND and max(self.log_mel, self.power_spectrum) <= FEATURE_BOUND
                and self.frontend_fed_logits <= FRONTEND_FED_LOGIT_BOUND)


def check_golden(golden_dir: str | Path, use_config: bool = True) -> list[CaseParity]:
    """Max abs differences of every case: reference logits, numpy features, frontend-fed logits."""
    import torch

    from .model import load_checkpoint, reference_outputs

    golden_dir = Path(golden_dir)
    cases = golden_cases(golden_dir)
    config = golden_dir / "config.json" if use_config else None
    model = load_checkpoint(golden_dir / "state_dict.pt", config)
    results = []
    for case in cases:
        logits, _ = reference_outputs(model, case.wav, acoustic=False)
        log_mel, log_power = compute_features(case.wav)
        with torch.no_grad():
            hidden, lengths = model.forward_features(
                torch.from_numpy(log_mel)[None], torch.from_numpy(log_power)[None],
                torch.tensor([log_mel.shape[1]]))
            fed_logits = model.decoder(hidden, lengths)[0].numpy()
        results.append(CaseParity(
            case.name,
            logits=float(np.abs(logits - case.logits).max()),
            log_mel=float(np.abs(log_mel - case.log_mel).max()),
            power_spectrum=float(np.abs(log_power - case.power_spectrum).max()),
            frontend_fed_logits=float(np.abs(fed_logits - case.logits).max()),
        ))
    return results
