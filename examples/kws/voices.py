"""Who says what: every engine's voices, the reserved-voice refusal and the seeded plan of renderings."""
from __future__ import annotations

import fnmatch

import numpy as np

from common import KEYWORDS, UNKNOWN_WORDS, UNKNOWN_WORDS_EASY, UNKNOWN_WORDS_NEAR, stable_int

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

# Kokoro-82M v1.0 voice packs (kokoro-js 1.2.1; the model and its assets: engines.py).
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
# Blends (weighted means of two packs) of TRAINING voices only; they stay in training.
KOKORO_BLENDS = {"blend_bella_heart": ("af_bella", "af_heart", 0.5),
                 "blend_adam_eric": ("am_adam", "am_eric", 0.5),
                 "blend_alice_daniel": ("bf_alice", "bm_daniel", 0.5),
                 "blend_jessica_isabella": ("af_jessica", "bf_isabella", 0.6),
                 "blend_puck_fable": ("am_puck", "bm_fable", 0.5),
                 "blend_kore_fenrir": ("af_kore", "am_fenrir", 0.3)}

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


def speakers() -> list:
    """Every (engine, voice) pair rendered, in rendering order; refuses a reserved voice."""
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


def speed_up(engine: str, p: dict, factor: float) -> dict:
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


def rate_pitch(engine: str, p: dict):
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
    for engine, voice in speakers():
        speaker = f"{engine}:{voice}"
        rng = np.random.default_rng([seed, stable_int(speaker)])
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
