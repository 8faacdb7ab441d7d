"""Long streams of words over background noise (with their word times), and labelled 1 s windows cut from them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

import amazon_queen
from audio import CLIP, SR, active_rms, fade, read_mono, resample, to_pcm16, trim_silence
from common import KEYWORDS, SILENCE, UNKNOWN, UNKNOWN_WORDS_NEAR, log, read_csv
from mixing import P_RIR, Pool, pick, reverberate
from splits import SPLITS, split_of_noise

STREAM_GAP_S = (0.6, 2.5)      # silence (background only) between words
STREAM_SNR_DB = (5.0, 20.0)    # word against the background, drawn per word
STREAM_BED_DB = (-45.0, -25.0)  # background RMS, drawn per background recording
P_STREAM_KEYWORD = 0.5         # share of words that are keywords (the rest: _unknown_ words)
P_STREAM_TALK = 0.5            # with real talk (amazon_queen.py): share of _unknown_ words that are its lines


def _stream_sources(pool: Pool | None, split: str, engines, clips_dir, near_miss_only: bool = False):
    """label (a keyword or _unknown_) -> [(audio array or words_dir path, speaker, word)] for a stream;
    with `near_miss_only`, the synthetic _unknown_ words are only `UNKNOWN_WORDS_NEAR`."""
    by_label: dict = {}
    if clips_dir is not None and near_miss_only:
        raise ValueError("near_miss_only picks words by name; the clips of clips_dir have none. Leave one out.")
    if clips_dir is not None:  # labelled 1 s clips (another voice set): their active part is the word
        for label_dir in sorted(p for p in Path(clips_dir).iterdir() if p.is_dir()):
            if label_dir.name not in KEYWORDS and label_dir.name != UNKNOWN:
                continue
            for clip in sorted(f for f in label_dir.iterdir() if f.suffix.lower() in (".wav", ".flac")):
                x = trim_silence(read_mono(clip))
                if len(x):
                    by_label.setdefault(label_dir.name, []).append((x, f"{label_dir.name}/{clip.name}", ""))
        return by_label
    words, _, _ = pool.index(split)
    for word, by_engine in sorted(words.items()):
        label = word if word in KEYWORDS else UNKNOWN
        if near_miss_only and label == UNKNOWN and word not in UNKNOWN_WORDS_NEAR:
            continue
        for engine, by_speaker in sorted(by_engine.items()):
            if engines and engine not in engines:
                continue
            for speaker, rows in sorted(by_speaker.items()):
                by_label.setdefault(label, []).extend((row["path"], speaker, word) for row in rows)
    return by_label


def render_stream(words_dir, noise_dir, split: str = "test", minutes: float = 10.0, seed: int = 0,
                  engines=None, clips_dir=None, talk_dir=None, near_miss_only: bool = False):
    """A long stream: words of `split`'s voices (keywords and _unknown_ words, half each) at random
    gaps over a continuous background of `split`'s noise recordings. Returns (float32 audio at 16 kHz,
    events: every word's start_s, end_s, label, word and speaker). With `clips_dir` (label folders of
    clips, as `build` writes), the words are those clips' active parts (split then picks only the noise,
    engines is unused). With `talk_dir` (`kws.py queen cut` output), half the _unknown_ words are real
    keyword-free lines of `split`'s characters. `near_miss_only`: the other synthetic words are only the
    near-miss ones (hard negatives). Same inputs + same seed -> the same stream."""
    words_dir, noise_dir = Path(words_dir), Path(noise_dir)
    pool = Pool(words_dir, noise_dir) if clips_dir is None else None
    rng = np.random.default_rng([seed, 7, SPLITS.index(split)])
    by_label = _stream_sources(pool, split, engines, clips_dir, near_miss_only)
    talk = amazon_queen.talk_sources(talk_dir, split) if talk_dir else []
    missing = [w for w in KEYWORDS + [UNKNOWN] if not by_label.get(w)]
    if missing:
        raise RuntimeError(f"stream of split {split}: no utterances for {missing}")
    rows = read_csv(noise_dir / "noises.csv")
    noises = sorted(r["path"] for r in rows if split_of_noise(r["path"]) == split and r["kind"] != "rir")
    rirs = sorted(r["path"] for r in rows if split_of_noise(r["path"]) == split and r["kind"] == "rir")
    total = int(minutes * 60 * SR)
    # Background: the split's recordings one after another (each at its own level), 50 ms cross-fades.
    bed = np.zeros(total)
    at = 0
    while at < total:
        x = read_mono(noise_dir / pick(rng, noises))
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
        label = pick(rng, KEYWORDS) if rng.random() < P_STREAM_KEYWORD else UNKNOWN
        from_talk = label == UNKNOWN and talk and rng.random() < P_STREAM_TALK
        source, speaker, word = pick(rng, talk if from_talk else by_label[label])
        x = pool.audio(words_dir, source) if isinstance(source, str) else source
        if rng.random() < 0.5:
            x = resample(x, SR * float(rng.uniform(0.9, 1.1)), SR)
        dry = len(x)
        if rirs and rng.random() < P_RIR:
            x = reverberate(x, read_mono(noise_dir / pick(rng, rirs)), rng)
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
    sf.write(str(out_path), to_pcm16(y), SR, subtype="PCM_16", format="FLAC")
    summary = {"sample_rate_hz": SR, "seconds": len(y) / SR, "split": split, "seed": seed,
               "engines": sorted(engines) if engines else None, "clips_dir": str(clips_dir) if clips_dir else None,
               "keywords": sum(e["label"] != UNKNOWN for e in events),
               "unknown_words": sum(e["label"] == UNKNOWN for e in events), "events": events}
    out_path.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    log(f"[stream] {out_path}: {summary['seconds'] / 60:.1f} min, {summary['keywords']} keywords, "
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
                         minutes_per_stream: float = 5.0, talk_dir=None, near_miss_only: bool = False) -> dict:
    """`count` 1 s windows cut at random times from `split` streams (`render_stream`), written to
    out_dir/<split>/<label>/w<index>.wav with `window_label`'s labels: training material that looks
    like what a stream classifies (cut words, words next to words), not only whole words.
    `near_miss_only`: streams whose other synthetic words are the near-miss ones (`render_stream`)."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng([seed, 11, SPLITS.index(split)])
    written: dict = {}
    index = 0
    stream_seed = seed * 1000
    while index < count:
        y, events = render_stream(words_dir, noise_dir, split, minutes_per_stream, stream_seed, talk_dir=talk_dir,
                                  near_miss_only=near_miss_only)
        stream_seed += 1
        for _ in range(int(minutes_per_stream * 60 * 2)):  # about two windows per second of stream
            if index >= count:
                break
            draw = rng.random()
            if draw < 0.7:  # around a word (keywords and other words alike): whole, or cut at an edge
                pool_of = [e for e in events if (e["label"] == UNKNOWN) == (draw >= 0.4)]
                e = pick(rng, pool_of)
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
            sf.write(str(d / f"w{index:05d}.wav"), to_pcm16(y[start: start + CLIP]), SR, subtype="PCM_16",
                     format="WAV")
            written[label] = written.get(label, 0) + 1
            index += 1
    log(f"[windows] {split}: {written}")
    return written
