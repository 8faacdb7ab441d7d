"""Mixing 1 s clips (word, room, background, level) and the labelled set `build` writes from them."""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from audio import CLIP, SR, active_rms, peak_normalize, play_at, read_mono, to_pcm16
from common import KEYWORDS, LABELS, SILENCE, UNKNOWN, UNKNOWN_WORDS, UNKNOWN_WORDS_EASY, UNKNOWN_WORDS_NEAR
from common import dir_mb, log, read_csv
from splits import SPLITS, split_of_noise, split_of_speaker
from teacher_check import dropped_paths

from hear_edge.errors import DataFolderError

P_NEAR_MISS = 0.3  # share of _unknown_ clips drawn from the near-miss list
# Engine mix used by build() for word clips (renormalised over engines present in a split).
ENGINE_WEIGHTS = {"espeak": 0.35, "flite": 0.25, "festival": 0.2, "piper": 0.2, "foreign": 0.25,
                  "kokoro": 0.6, "rhvoice": 0.15, "child": 0.06, "recorded": 0.04}
P_RECORDED_WORDS = 0.1  # share of _unknown_ clips drawn from recorded words (when present)
P_COLORED_NOISE = 0.1    # share of noisy clips whose background is white/pink/brown noise
P_RIR = 0.25
P_DIGITAL_SILENCE = 0.05  # share of _silence_ clips that are (almost) digital silence


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


def reverberate(x: np.ndarray, rir: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`x` in a room: a random wet share of it convolved with `rir`, plus the dry rest (longer by the tail)."""
    h = prepare_rir(rir)
    wet = float(rng.uniform(0.5, 1.0))
    return wet * _fftconv(x, h) + (1 - wet) * np.pad(x, (0, len(h) - 1))


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
        x = play_at(x, sp)
    x = _loudest_window(x, int(0.98 * CLIP))
    n_dry = len(x)
    if rir_or_None is not None:
        x = reverberate(x, rir_or_None, rng)
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


class Pool:
    """The renderings (less those the teacher heard as another word) and noises, split by this
    builder's rules, with their audio read once."""

    def __init__(self, words_dir: Path, noise_dir: Path):
        self.words_dir, self.noise_dir = words_dir, noise_dir
        dropped = dropped_paths(words_dir)
        self.utts = [u for u in read_csv(words_dir / "utterances.csv") if u["path"] not in dropped]
        for u in self.utts:  # recompute: the rules of splits.py are authoritative
            u["split"] = split_of_speaker(u["speaker"])
        if not (noise_dir / "noises.csv").exists():  # else every clip would be built without noise, silently
            raise DataFolderError(f"{noise_dir} holds no noises.csv: expected the folder `kws.py noise NOISE_DIR` "
                                  f"writes; run that first or name that folder")
        self.noises = read_csv(noise_dir / "noises.csv")
        for r in self.noises:
            r["split"] = split_of_noise(r["path"])
        self._cache: dict = {}

    def audio(self, base: Path, rel: str) -> np.ndarray:
        key = (str(base), rel)
        if key not in self._cache:
            self._cache[key] = read_mono(base / rel)
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


def pick(rng, seq):
    """One item of `seq`, drawn from rng."""
    return seq[int(rng.integers(len(seq)))]


def _pick_utt(rng, by_engine: dict):
    engines = sorted(by_engine)
    w = np.array([ENGINE_WEIGHTS.get(e, 0.1) for e in engines])
    e = engines[int(rng.choice(len(engines), p=w / w.sum()))]
    spk = pick(rng, sorted(by_engine[e]))
    return pick(rng, by_engine[e][spk])


def build(out_dir, words_dir, noise_dir, clips_per_class=None, seed: int = 0,
          progress: bool = True) -> dict:
    """Write out_dir/<split>/<label>/<index>.wav + out_dir/metadata.csv (deterministic)."""
    clips_per_class = clips_per_class or {"train": 300, "val": 40, "test": 60}
    out_dir, words_dir, noise_dir = Path(out_dir), Path(words_dir), Path(noise_dir)
    t0 = time.time()
    pool = Pool(words_dir, noise_dir)
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
                    kind = pick(rng, ["white", "pink", "brown"])
                    noise, nname = colored_noise(kind, CLIP, rng), "colored:" + kind
                else:
                    rel = pick(rng, sorted(noise_by_src[pick(rng, sources)]))
                    noise, nname = pool.audio(noise_dir, rel), rel
                if label == SILENCE:
                    if rng.random() < P_DIGITAL_SILENCE:
                        noise, nname = None, ""
                    y = silence_clip(noise, rng, info=info)
                    info.update(word="", speaker="", engine="", utt="", noise=nname, rir="")
                else:
                    if label == UNKNOWN:
                        near = unk_near and rng.random() < P_NEAR_MISS
                        word = pick(rng, unk_near if near else unk_easy)
                        if unk_other and rng.random() < P_RECORDED_WORDS:
                            word = pick(rng, unk_other)
                    else:
                        word = label
                    u = _pick_utt(rng, words[word])
                    rir_rel = pick(rng, rirs) if (rirs and rng.random() < P_RIR) else ""
                    rir = pool.audio(noise_dir, rir_rel) if rir_rel else None
                    y = mix_clip(pool.audio(words_dir, u["path"]), noise, rir, rng, info=info)
                    info.update(word=word, speaker=u["speaker"], engine=u["engine"],
                                utt=u["path"], noise=nname if info.get("snr_db") != "" else "",
                                rir=rir_rel)
                sf.write(str(out_dir / info["path"]), to_pcm16(y), SR, subtype="PCM_16", format="WAV")
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
                   size_mb=round(dir_mb(out_dir), 2))
    log(f"[build] {summary}")
    return summary
