"""Which split a speaker, a noise recording or a room belongs to (train / val / test), by pinned or hashed rules."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from common import read_csv
from voices import FOREIGN_VOICES, KOKORO_BLENDS, KOKORO_ENGLISH, KOKORO_VOICES, RECORDED_VOICES, speakers

SPLITS = ("train", "val", "test")
# Held-out Kokoro voices: one or two per accent and sex, two accented; two more for validation.
KOKORO_TEST = ["af_sarah", "af_aoede", "am_michael", "am_onyx", "bf_emma", "bm_george",
               "hf_beta", "im_nicola"]
KOKORO_VAL = ["af_river", "bm_lewis"]

# Speaker families: the same human voice behind several engines/voices is one family.
_CMU_FAMILY = {"kal": "kal", "kal16": "kal", "slt": "slt", "slt_hts": "slt", "awb": "awb",
               "rms": "rms", "ked": "ked"}
SPEAKER_FAMILY_PINS = {
    "cmu:slt": "test",        # whole engine-voice family held out: flite slt + festival slt HTS
    "espeak:klatt": "test",   # whole espeak Klatt-synthesiser family (klatt, klatt2..5)
    "cmu:rms": "val",
    "espeak:iven": "val",     # pins below only balance the lumpy family hash (~19/10/71 %)
    "espeak:robosoft": "train",
    "cmu:kal": "train", "cmu:awb": "train", "cmu:ked": "train",
    "piper:joe": "train",     # the only neural voice: cannot be split, kept for training
    **{f"foreign:{voice}": "train" for voice in FOREIGN_VOICES},  # accented: a test would be unfair
    # issue 13: natural voices. Kokoro: held-out voices of each accent and sex (KOKORO_TEST),
    # two for validation, the rest and every blend of them in training.
    **{f"kokoro:{v}": ("test" if v in KOKORO_TEST else "val" if v in KOKORO_VAL else "train")
       for v in KOKORO_VOICES},
    **{f"kokoro:{b}": "train" for b in KOKORO_BLENDS},
    "rhvoice:bdl": "test",    # US male, held out
    "rhvoice:clb": "train",   # US female: training had no natural female US voice
    "child:cs_krb": "train",  # the only child voice, respelled Czech: training only
    **{f"recorded:{v}": "train" for v in RECORDED_VOICES},  # a single speaker each, few words
}
SPLIT_SALT = "hear-edge-kws-v1"
SPEAKER_TEST_FRAC, SPEAKER_VAL_FRAC = 0.17, 0.10   # for hashed (espeak) families

NOISE_PINS = {  # (source dir, recording stem) -> split; keeps every source represented in test
    "moh/reno_project-system": "test",
    "moh/manolo_camp-morning_coffee": "val",
    "moh/macroform-robot_dity": "train",
    "moh/macroform-the_simplicity": "train",
    "typing/typing_00": "test",
    "typing/typing_01": "val",
    "animals/dog": "test",
    "animals/sheep": "val",
    "rir/ir_bathroom1": "test",
    "rir/Derlon Sanctuary": "test",
    "rir/Symphonic": "val",
    "rir/Accoustic2_Impulse": "train",
    "rir/Blatty Plate": "train",
    "rir/Concrete Room": "train",
}
NOISE_TEST_FRAC, NOISE_VAL_FRAC = 0.2, 0.1


def _u01(text: str) -> float:
    """Stable uniform number in [0, 1) from a string (sha1, platform independent)."""
    h = hashlib.sha1(text.encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0 ** 64


def speaker_family(speaker: str) -> str:
    """'espeak:klatt3' -> 'espeak:klatt'; 'festival:slt_hts' -> 'cmu:slt'; 'piper:joe'."""
    engine, _, voice = speaker.partition(":")
    if engine in ("flite", "festival"):
        return "cmu:" + _CMU_FAMILY.get(voice, voice)
    if engine == "espeak":
        base = re.sub(r"\d+$", "", voice).lower()
        if len(base) <= 1:  # m1..m8, f1..f5 are distinct voices, not a family
            base = voice.lower()
        return "espeak:" + base
    if engine == "rhvoice" and voice in ("slt", "alan"):  # CMU slt; alan ~ CMU awb
        return "cmu:" + {"slt": "slt", "alan": "awb"}[voice]
    return f"{engine}:{voice}"


def pinned_or_hashed_split(kind: str, key: str, pins: dict, test_frac: float, val_frac: float) -> str:
    """`pins[key]` where pinned, else a split drawn from a salted hash of `kind` and `key`."""
    if key in pins:
        return pins[key]
    u = _u01(SPLIT_SALT + f"/{kind}/" + key)
    if u < test_frac:
        return "test"
    if u < test_frac + val_frac:
        return "val"
    return "train"


def split_of_speaker(speaker: str) -> str:
    """Deterministic split of a speaker ('engine:voice'), by family."""
    return pinned_or_hashed_split("speaker", speaker_family(speaker), SPEAKER_FAMILY_PINS,
                                  SPEAKER_TEST_FRAC, SPEAKER_VAL_FRAC)


def noise_key(path) -> str:
    """'<noise_dir>/moh/reno_project-system.flac' -> 'moh/reno_project-system'."""
    p = Path(str(path))
    return f"{p.parent.name}/{p.stem}"


def split_of_noise(path) -> str:
    """Deterministic split of a noise recording or RIR, keyed by '<source dir>/<stem>'."""
    return pinned_or_hashed_split("noise", noise_key(path), NOISE_PINS, NOISE_TEST_FRAC, NOISE_VAL_FRAC)


def split_report(words_dir=None, noise_dir=None) -> dict:
    """Speakers / noise files per split (for checking the hold-out)."""
    rep: dict = {"speakers": {}, "kokoro_by_group": {}, "noise": {}}
    for e, v in speakers():
        s = split_of_speaker(f"{e}:{v}")
        rep["speakers"].setdefault(s, {}).setdefault(e, []).append(v)
        if e == "kokoro":
            group = (" ".join(KOKORO_ENGLISH[v]) if v in KOKORO_ENGLISH
                     else "blend" if v in KOKORO_BLENDS else "accented")
            rep["kokoro_by_group"].setdefault(s, {}).setdefault(group, []).append(v)
    if noise_dir and (Path(noise_dir) / "noises.csv").exists():
        for r in read_csv(Path(noise_dir) / "noises.csv"):
            rep["noise"].setdefault(split_of_noise(r["path"]), {}).setdefault(
                r["source"], []).append(Path(r["path"]).stem)
    return rep
