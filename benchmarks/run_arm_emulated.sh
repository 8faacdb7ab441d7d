#!/usr/bin/env bash
# Correctness check of the hear-edge runtime on aarch64, under qemu user-mode emulation,
# on an x86_64 Debian 12 host (root). Run from the repository root:
#
#     bash benchmarks/run_arm_emulated.sh
#
# What it does (the recipe and its pitfalls are in the comments below; the device itself:
# examples/platforms/raspberry-pi.md):
#   1. installs qemu-user-static (apt-get) if it is missing;
#   2. builds, or reuses, a Debian bookworm arm64 sysroot holding python3.11: the arm64 .debs are
#      fetched with a PRIVATE apt state under $ARM_CACHE (APT::Architecture=arm64), so the host's
#      dpkg architectures, apt lists and binfmt_misc are left untouched, and nothing arm64 is ever
#      installed on the host; the .debs are only unpacked with dpkg-deb -x;
#   3. downloads, or reuses, the aarch64 cp311 wheels of hear-edge's runtime dependencies (read
#      from the built wheel's metadata: the base deps plus the [onnx] extra) into a target dir;
#   4. builds hear-edge (pure Python) natively from a copy of the sources and installs it, without
#      deps, into a fresh per-run dir (so the code under test is always the working tree's);
#   5. runs, under qemu-aarch64 with QEMU_CPU=cortex-a72, every golden case of
#      tests/data/golden/tiny/*.npz through tests/data/tiny-golden.hearedge on onnxruntime:
#      fp32 logits within 1e-3 of the golden ones, int8 top-1 equal to fp32 top-1; plus one audio
#      I/O check (soundfile file round trip, soxr resampling);
#   6. with ARM_MEMORY=1 only: peak RSS of onnx and litert on the default bundle under Cortex-A53,
#      A72 and A76, and of a bare python under qemu, into benchmarks/arm-emulated-memory.json.
# Exit status 0 only if every check passed. Emulated timings are NOT ARM performance numbers.
#
# Environment:
#   ARM_CACHE          cache folder (default /tmp/hear-edge-arm): sysroot, wheels, pip cache
#   ARM_REFRESH=1      rebuild the sysroot and the wheel dir even if cached
#   ARM_CASES          comma-separated golden case names to run (default: all)
#   ARM_CHECK_TIMEOUT  seconds allowed for the emulated check (default 480)
#   QEMU_CPU           emulated CPU (default cortex-a72; "max" gives spurious numpy FP warnings)
#   ARM_MEMORY=1       also measure peak RSS of both backends on Cortex-A53, A72 and A76 (about 5 min more),
#                      written to benchmarks/arm-emulated-memory.json
set -euo pipefail

T_START=$(date +%s.%N)
T_PHASE=$T_START
TIMINGS=()
phase_done() {  # phase_done NAME: print and record the time since the previous phase ended
    local now el
    now=$(date +%s.%N)
    el=$(awk -v a="$T_PHASE" -v b="$now" 'BEGIN{printf "%.1f", b-a}')
    TIMINGS+=("$(printf '%-22s %7ss' "$1" "$el")")
    echo "[arm-emu] phase '$1' took ${el}s"
    T_PHASE=$now
}
log() { echo "[arm-emu] $*"; }
die() { echo "[arm-emu] ERROR: $*" >&2; exit 1; }

# --- where things are ---------------------------------------------------------------------------
if [ -f pyproject.toml ] && [ -d tests/data/golden/tiny ]; then
    ROOT=$PWD
else
    ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    [ -f "$ROOT/pyproject.toml" ] && [ -d "$ROOT/tests/data/golden/tiny" ] \
        || die "run me from the hear-edge repository root (bash benchmarks/run_arm_emulated.sh)"
fi
cd "$ROOT"
BUNDLE=tests/data/tiny-golden.hearedge
GOLDEN_DIR=tests/data/golden/tiny
[ -e "$BUNDLE" ] || die "missing $BUNDLE"
ls "$GOLDEN_DIR"/*.npz >/dev/null 2>&1 || die "no golden cases in $GOLDEN_DIR"

ARM_CACHE=${ARM_CACHE:-/tmp/hear-edge-arm}
export QEMU_CPU=${QEMU_CPU:-cortex-a72}
HOST_PY=${HOST_PY:-python3}
mkdir -p "$ARM_CACHE"
ARM_CACHE=$(cd "$ARM_CACHE" && pwd)
SYSROOT=$ARM_CACHE/sysroot-arm64
SITE=$ARM_CACHE/site-arm64
SYSROOT_STAMP=$SYSROOT/.hear-edge-sysroot-ok
SITE_STAMP=$SITE/.hear-edge-site-ok
SYSROOT_RECIPE="v1 bookworm python3.11 libstdc++6 libgomp1 fake-cpuinfo-a72"

[ "$(uname -m)" = x86_64 ] || log "warning: host is $(uname -m), not x86_64; continuing"
command -v "$HOST_PY" >/dev/null || die "no host $HOST_PY"

# One run at a time per cache (a second run waits).
exec 9>"$ARM_CACHE/.lock"
if command -v flock >/dev/null; then flock 9; fi

RUN=$(mktemp -d "${TMPDIR:-/tmp}/hear-edge-arm-run.XXXXXX")
trap 'rm -rf "$RUN"' EXIT
log "repo $ROOT, cache $ARM_CACHE, QEMU_CPU=$QEMU_CPU"

# --- 1. qemu-user-static --------------------------------------------------------------------------
if ! command -v qemu-aarch64-static >/dev/null; then
    [ "$(id -u)" = 0 ] || die "qemu-user-static is missing and I am not root to apt-get install it"
    log "installing qemu-user-static"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null; then
        apt-get update -qq || { sleep 5; apt-get update -qq || log "apt-get update reported errors (continuing)"; }
        apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null \
            || die "apt-get install qemu-user-static failed"
    fi
fi
QEMU=$(command -v qemu-aarch64-static)
log "$($QEMU --version | sed -n 1p)"
phase_done qemu

# --- 2. arm64 sysroot with python3.11 -------------------------------------------------------------
if [ "${ARM_REFRESH:-0}" = 1 ] || [ ! -f "$SYSROOT_STAMP" ] || [ "$(cat "$SYSROOT_STAMP")" != "$SYSROOT_RECIPE" ] \
        || [ ! -s "$SYSROOT/proc/cpuinfo" ] || [ ! -s "$SYSROOT/sys/devices/system/cpu/possible" ]; then
    log "building the arm64 sysroot (private apt state, nothing installed on the host)"
    APTDIR=$ARM_CACHE/apt
    mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial"
    : > "$APTDIR/status"
    # Host sources (deb.debian.org bookworm + security), but arm64 as the only architecture and
    # our own lists/cache/status, so the host's apt and dpkg state are untouched.
    APT_OPTS=(-o APT::Architecture=arm64 -o APT::Architectures=arm64
              -o Dir::State::Lists="$APTDIR/lists" -o Dir::State::status="$APTDIR/status"
              -o Dir::Cache="$APTDIR/cache" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
              -o APT::Sandbox::User=root -o Debug::NoLocking=1 -o Acquire::Retries=3)
    ok=0
    for attempt in 1 2 3; do   # arm64 indexes can fail transiently ("Mirror sync in progress?")
        if apt-get "${APT_OPTS[@]}" -qq update; then ok=1; break; fi
        log "apt-get update (arm64) failed, attempt $attempt; retrying in $((attempt * 5))s"
        sleep $((attempt * 5))
    done
    [ $ok = 1 ] || log "apt-get update kept reporting errors; trying with whatever indexes arrived"
    policy=$(apt-cache "${APT_OPTS[@]}" policy python3.11 2>&1 || true)
    grep -q 'Candidate: [0-9]' <<<"$policy" \
        || die "no arm64 python3.11 in the apt indexes (is the host's mirror serving arm64?)"
    # python3.11's run-time closure, without packaging tools and perl that python does not need
    PKGS=$(apt-cache "${APT_OPTS[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
               --no-breaks --no-replaces --no-enhances python3.11 libstdc++6 libgomp1 \
           | grep -E '^[a-z0-9][a-z0-9.+-]*$' \
           | grep -vxE 'dpkg|install-info|tar|debconf|perl|perl-base|perl-modules-[0-9.]+|libperl[0-9.]+|mailcap|mime-support' \
           | sort -u || true)
    [ -n "$PKGS" ] || die "could not resolve python3.11's arm64 dependencies"
    DEBS=$ARM_CACHE/debs-arm64
    rm -rf "$DEBS"; mkdir -p "$DEBS"
    ok=0
    for attempt in 1 2; do
        if (cd "$DEBS" && apt-get "${APT_OPTS[@]}" -qq download $PKGS); then ok=1; break; fi
        log "apt-get download failed, attempt $attempt"; sleep 5
    done
    [ $ok = 1 ] || die "apt-get download of the arm64 .debs failed"
    ls "$DEBS"/*.deb | grep -vE '_(arm64|all)\.deb$' && die "downloaded a non-arm64 .deb"
    log "$(ls "$DEBS"/*.deb | wc -l) arm64 .debs, $(du -sh "$DEBS" | cut -f1)"
    rm -rf "$SYSROOT.tmp" "$SYSROOT"
    mkdir -p "$SYSROOT.tmp"
    for d in "$DEBS"/*.deb; do dpkg-deb -x "$d" "$SYSROOT.tmp"; done
    ln -sf python3.11 "$SYSROOT.tmp/usr/bin/python3"
    # onnxruntime's bundled pytorch/cpuinfo segfaults at import when it reads the host's x86
    # /proc/cpuinfo with /sys/devices/system/cpu/*; qemu -L serves these sysroot files first.
    mkdir -p "$SYSROOT.tmp/sys/devices/system/cpu" "$SYSROOT.tmp/proc"
    echo 0-1 > "$SYSROOT.tmp/sys/devices/system/cpu/possible"
    echo 0-1 > "$SYSROOT.tmp/sys/devices/system/cpu/present"
    for i in 0 1; do
        printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$i"
    done > "$SYSROOT.tmp/proc/cpuinfo"
    out=$(QEMU_LD_PREFIX="$SYSROOT.tmp" "$QEMU" "$SYSROOT.tmp/usr/bin/python3.11" -I -c \
          'import platform, ssl, ctypes, sqlite3; print(platform.machine(), platform.python_version())') \
        || die "the new sysroot's python3.11 does not run under qemu"
    log "sysroot python: $out"
    echo "$SYSROOT_RECIPE" > "$SYSROOT.tmp/.hear-edge-sysroot-ok"
    mv "$SYSROOT.tmp" "$SYSROOT"
    log "sysroot $(du -sh "$SYSROOT" | cut -f1)"
else
    log "reusing sysroot $SYSROOT"
fi
phase_done sysroot

# --- 3. build hear-edge natively (pure Python wheel) from a copy of the working tree --------------
# A copy, so that setuptools writes no build/ or *.egg-info into the repository.
SRC=$RUN/src
mkdir -p "$SRC"
PKG_DIRS=$("$HOST_PY" - <<'EOF'
import tomllib
cfg = tomllib.load(open("pyproject.toml", "rb"))
st = cfg.get("tool", {}).get("setuptools", {})
dirs = set(st.get("package-dir", {}).values()) or {"hear_edge"}
print(" ".join(sorted(d.split("/")[0] for d in dirs if d)))
EOF
)
for f in pyproject.toml setup.py setup.cfg MANIFEST.in README* LICENSE* $PKG_DIRS; do
    [ -e "$f" ] && cp -r "$f" "$SRC/"
done
find "$SRC" -name __pycache__ -prune -exec rm -rf {} +
if ! "$HOST_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$RUN/wheel" "$SRC" >"$RUN/wheel.log" 2>&1; then
    log "wheel build without isolation failed; retrying with build isolation"
    "$HOST_PY" -m pip wheel -q --no-deps -w "$RUN/wheel" "$SRC" >>"$RUN/wheel.log" 2>&1 \
        || { cat "$RUN/wheel.log" >&2; die "could not build the hear-edge wheel"; }
fi
WHEEL=$(ls "$RUN"/wheel/hear_edge-*.whl)
# Runtime requirements from the wheel metadata: the base deps plus the [onnx] extra.
REQS=$("$HOST_PY" - "$WHEEL" <<'EOF'
import re, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
out = []
for line in meta.splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    req, _, marker = line[len("Requires-Dist:"):].strip().partition(";")
    marker = marker.strip()
    if not marker:
        out.append(req.strip())
    elif re.fullmatch(r'extra\s*==\s*["\']onnx["\']', marker):
        out.append(req.strip())
    elif "extra" not in marker:
        out.append(f"{req.strip()}; {marker}")
print("\n".join(sorted(set(out))))
EOF
)
log "hear-edge wheel $(basename "$WHEEL"); aarch64 runtime requirements: $(echo $REQS)"
rm -rf "$RUN/pkg"
"$HOST_PY" -m pip install -q --no-deps --no-index --no-compile --target "$RUN/pkg" "$WHEEL" \
    >"$RUN/pkg.log" 2>&1 || { cat "$RUN/pkg.log" >&2; die "could not install the hear-edge wheel"; }
phase_done build-hear-edge

# --- 4. aarch64 wheels of the runtime dependencies --------------------------------------------------
# pip 23.2 does not expand manylinux_2_x tags: list every glibc level up to bookworm's 2.36.
PLAT=(--platform manylinux2014_aarch64 --platform linux_aarch64)
for i in $(seq 17 36); do PLAT+=(--platform "manylinux_2_${i}_aarch64"); done
SITE_KEY="v1 cp311 aarch64 glibc2.36 | $(echo $REQS)"
if [ "${ARM_REFRESH:-0}" = 1 ] || [ ! -f "$SITE_STAMP" ] || [ "$(cat "$SITE_STAMP")" != "$SITE_KEY" ]; then
    log "downloading aarch64 cp311 wheels into $SITE"
    rm -rf "$SITE.tmp" "$SITE"
    mapfile -t REQ_ARR <<<"$REQS"
    ok=0
    for attempt in 1 2; do
        if "$HOST_PY" -m pip install -q --disable-pip-version-check --cache-dir "$ARM_CACHE/pip-cache" \
               --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 "${PLAT[@]}" \
               --no-compile --target "$SITE.tmp" "${REQ_ARR[@]}" >"$RUN/site.log" 2>&1; then
            ok=1; break
        fi
        log "pip install of the aarch64 wheels failed (attempt $attempt):"; tail -5 "$RUN/site.log" >&2
        rm -rf "$SITE.tmp"; sleep 5
    done
    [ $ok = 1 ] || die "could not get the aarch64 wheels"
    echo "$SITE_KEY" > "$SITE.tmp/.hear-edge-site-ok"
    mv "$SITE.tmp" "$SITE"
    log "aarch64 site $(du -sh "$SITE" | cut -f1): $(cd "$SITE" && ls -d *.dist-info | sed 's/\.dist-info//' | tr '\n' ' ')"
else
    log "reusing aarch64 wheels in $SITE"
fi
phase_done aarch64-wheels

# --- 5. the check, under emulation ------------------------------------------------------------------
cat > "$RUN/check_aarch64.py" <<'EOF'
"""Golden-logit check of hear-edge on the emulated aarch64 python. argv: bundle golden_dir [cases]."""
import glob, os, platform, sys, tempfile, time, traceback

t0 = time.perf_counter()
machine = platform.machine()
print(f"platform.machine() = {machine}, python {platform.python_version()}", flush=True)
if machine != "aarch64":
    print(f"aarch64: 0 passed, 1 failed (machine is {machine})")
    sys.exit(1)

import numpy as np
import onnxruntime as ort
import soundfile as sf
import soxr
import hear_edge
from hear_edge import HearEdge

print(f"numpy {np.__version__}, onnxruntime {ort.__version__} {ort.get_available_providers()}, "
      f"soundfile {sf.__version__} (libsndfile {sf.__libsndfile_version__}), soxr {soxr.__version__}", flush=True)
print(f"hear_edge from {hear_edge.__file__}", flush=True)
print(f"imports {time.perf_counter() - t0:.1f}s", flush=True)

bundle, golden_dir = sys.argv[1], sys.argv[2]
wanted = [c for c in (sys.argv[3] if len(sys.argv) > 3 else "").split(",") if c]
TOL = 1e-3
passed = failed = 0

t = time.perf_counter()
fp32 = HearEdge.load(bundle, backend="onnx", precision="fp32")
int8 = HearEdge.load(bundle, backend="onnx", precision="int8")
assert fp32.precision == "fp32" and int8.precision == "int8", (fp32.precision, int8.precision)
print(f"loaded {bundle} (onnx fp32 + int8) in {time.perf_counter() - t:.1f}s", flush=True)

files = sorted(glob.glob(os.path.join(golden_dir, "*.npz")))
if wanted:
    files = [f for f in files if os.path.basename(f)[:-4] in wanted]
    missing = set(wanted) - {os.path.basename(f)[:-4] for f in files}
    if missing:
        print(f"FAIL unknown cases {sorted(missing)}"); failed += 1
if not files:
    print("FAIL no golden cases"); failed += 1

for path in files:
    name = os.path.basename(path)[:-4]
    t = time.perf_counter()
    try:
        case = np.load(path)
        wav, golden = case["wav"], case["logits"]
        logits = np.asarray(fp32.classify(wav.T, sample_rate=16000, max_results=None).logits)
        q_logits = np.asarray(int8.classify(wav.T, sample_rate=16000, max_results=None).logits)
        ok_shape = logits.shape == golden.shape and np.isfinite(logits).all()
        diff = float(np.abs(logits - golden).max()) if ok_shape else float("inf")
        top, q_top, g_top = int(np.argmax(logits)), int(np.argmax(q_logits)), int(np.argmax(golden))
        q_diff = float(np.abs(q_logits - golden).max()) if q_logits.shape == golden.shape else float("inf")
        ok = ok_shape and diff <= TOL and q_top == top
        print(f"{'PASS' if ok else 'FAIL'} {name:16s} channels={wav.shape[0]} seconds={wav.shape[1] / 16000:6.2f} "
              f"fp32 max|d|={diff:.3e} (tol {TOL:g}) top1={top} golden={g_top} | int8 top1={q_top} "
              f"max|d|={q_diff:.3e} | {time.perf_counter() - t:.1f}s", flush=True)
    except Exception:
        traceback.print_exc()
        print(f"FAIL {name} (exception)", flush=True)
        ok = False
    passed += ok
    failed += not ok

# Audio I/O on aarch64: libsndfile file round trip (exact) and soxr resampling numerics.
t = time.perf_counter()
try:
    case = np.load(files[-1]) if files else None
    wav = case["wav"].T
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "clip.wav")
        sf.write(p, wav, 16000, subtype="FLOAT")
        from_file = np.asarray(fp32.classify(p, max_results=None).logits)
    from_array = np.asarray(fp32.classify(wav, sample_rate=16000, max_results=None).logits)
    file_diff = float(np.abs(from_file - from_array).max())
    x = np.arange(16000) / 16000
    sine = 0.5 * np.sin(2 * np.pi * 440 * x) + 0.25 * np.sin(2 * np.pi * 3000 * x)
    up = soxr.resample(sine, 16000, 48000, quality="HQ")
    back = soxr.resample(up, 48000, 16000, quality="HQ")
    rs_diff = float(np.abs(back - sine)[400:-400].max()) if len(back) == len(sine) else float("inf")
    at48 = np.asarray(fp32.classify(up.astype(np.float32), sample_rate=48000, max_results=None).logits)
    ok = file_diff <= 1e-5 and rs_diff <= 1e-4 and len(up) == 48000 and np.isfinite(at48).all()
    print(f"{'PASS' if ok else 'FAIL'} {'audio_io':16s} soundfile WAV round trip max|d|={file_diff:.1e}, "
          f"soxr 16k->48k->16k max|d|={rs_diff:.1e}, 48 kHz classify finite | {time.perf_counter() - t:.1f}s",
          flush=True)
except Exception:
    traceback.print_exc()
    print("FAIL audio_io (exception)", flush=True)
    ok = False
passed += ok
failed += not ok

print(f"total {time.perf_counter() - t0:.1f}s (emulated; not an ARM performance number)")
print(f"aarch64: {passed} passed, {failed} failed")
sys.exit(0 if failed == 0 else 1)
EOF

log "running the check under qemu-aarch64 ($QEMU_CPU)"
set +e
env -u PYTHONHOME -u PYTHONSTARTUP -u VIRTUAL_ENV \
    QEMU_LD_PREFIX="$SYSROOT" QEMU_CPU="$QEMU_CPU" PYTHONNOUSERSITE=1 PYTHONPATH="$RUN/pkg:$SITE" \
    timeout "${ARM_CHECK_TIMEOUT:-480}" \
    "$QEMU" "$SYSROOT/usr/bin/python3.11" -P "$RUN/check_aarch64.py" "$BUNDLE" "$GOLDEN_DIR" "${ARM_CASES:-}" \
    2>&1 | tee "$RUN/check.log"
rc=${PIPESTATUS[0]}
set -e
phase_done aarch64-check

# --- 6. opt-in: peak memory of both backends per emulated CPU (ARM_MEMORY=1) ------------------------
# A fresh emulated python per (CPU, backend) loads the default bundle (int8) and classifies a 1 s clip;
# ru_maxrss under qemu-user is qemu's own process, so a bare `python -c pass` per CPU gives qemu's
# overhead, subtracted in the "net" figures. The CPU's /proc/cpuinfo (served from the sysroot) carries
# its Features: `atomics` (LSE) only on the A76, which is what picks LiteRT's CompiledModel there.
if [ "${ARM_MEMORY:-0}" = 1 ] && [ "$rc" -eq 0 ]; then
    LITERT_SITE=$ARM_CACHE/site-arm64-litert
    if [ ! -f "$LITERT_SITE/.hear-edge-site-ok" ]; then
        log "downloading the aarch64 ai-edge-litert wheel into $LITERT_SITE"
        rm -rf "$LITERT_SITE"
        "$HOST_PY" -m pip install -q --disable-pip-version-check --cache-dir "$ARM_CACHE/pip-cache" \
            --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 "${PLAT[@]}" \
            --no-compile --target "$LITERT_SITE.tmp" ai-edge-litert \
            >"$RUN/litert-site.log" 2>&1 || { tail -5 "$RUN/litert-site.log" >&2; die "no aarch64 ai-edge-litert"; }
        touch "$LITERT_SITE.tmp/.hear-edge-site-ok"; mv "$LITERT_SITE.tmp" "$LITERT_SITE"
    fi
    cat > "$RUN/memory_aarch64.py" <<'EOF'
"""argv: backend bundle seconds [force-compiled]: one peak-RSS figure, printed as MEMORY-RESULT json."""
import json, resource, sys
if sys.argv[1] == "none":
    print("MEMORY-RESULT " + json.dumps({"backend": "none", "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    sys.exit(0)
if len(sys.argv) > 4 and sys.argv[4] == "force-compiled":  # what the gate prevents: CompiledModel without LSE
    import hear_edge.runtimes.litert as litert
    litert.weight_cache_safe = lambda: True
if len(sys.argv) > 4 and sys.argv[4] == "imports":  # the runtime imported, no model: what the clip adds is the model's
    import importlib
    import hear_edge.run.classifier, hear_edge.runtimes.litert as litert
    importlib.import_module("onnxruntime" if sys.argv[1] == "onnx" else "ai_edge_litert.compiled_model"
                            if litert.weight_cache_safe() else "ai_edge_litert.interpreter")
    print("MEMORY-RESULT " + json.dumps({"backend": sys.argv[1], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    sys.exit(0)
import numpy as np
from hear_edge import HearEdge
model = HearEdge.load(sys.argv[2], backend=sys.argv[1], precision="int8")
model.classify(np.random.default_rng(0).standard_normal(int(float(sys.argv[3]) * 16000)).astype(np.float32) * 0.1, 16000)
print("MEMORY-RESULT " + json.dumps({"backend": sys.argv[1], "engine": getattr(model.engine.window_graph, "engine", "onnxruntime"),
                                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
EOF
    DEFAULT_BUNDLE=hear_edge/assets/hear-kws12-demo.hearedge
    cp "$SYSROOT/proc/cpuinfo" "$RUN/cpuinfo.a72"
    trap 'cp "$RUN/cpuinfo.a72" "$SYSROOT/proc/cpuinfo" 2>/dev/null; rm -rf "$RUN"' EXIT
    : > "$RUN/memory.log"
    for cpu in cortex-a53 cortex-a72 cortex-a76; do
        case $cpu in
            cortex-a53) part=0xd03; features="fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid" ;;
            cortex-a72) part=0xd08; features="fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid" ;;
            cortex-a76) part=0xd0b; features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
        esac
        for i in 0 1; do
            printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: 3\n\n' "$i" "$features" "$part"
        done > "$SYSROOT/proc/cpuinfo"
        runs=("none - 0" "onnx $DEFAULT_BUNDLE 1 imports" "onnx $DEFAULT_BUNDLE 1" "litert $DEFAULT_BUNDLE 1 imports"
              "litert $DEFAULT_BUNDLE 1")
        [ $cpu = cortex-a72 ] && runs+=("litert $DEFAULT_BUNDLE 1 force-compiled")
        for args in "${runs[@]}"; do
            set +e
            out=$(env -u PYTHONHOME -u PYTHONSTARTUP -u VIRTUAL_ENV QEMU_LD_PREFIX="$SYSROOT" QEMU_CPU=$cpu \
                  PYTHONNOUSERSITE=1 PYTHONPATH="$RUN/pkg:$SITE:$LITERT_SITE" timeout 600 \
                  "$QEMU" "$SYSROOT/usr/bin/python3.11" -P "$RUN/memory_aarch64.py" $args 2>"$RUN/memory.err")
            status=$?
            set -e
            line=$(grep '^MEMORY-RESULT ' <<<"$out" | cut -d' ' -f2- || true)
            [ -n "$line" ] || line="{\"backend\": \"${args%% *}\", \"exit_status\": $status, \"stderr_tail\": $("$HOST_PY" -c 'import json,sys; print(json.dumps(sys.stdin.read()[-300:]))' <"$RUN/memory.err")}"
            echo "$cpu ${args##* } $line" | tee -a "$RUN/memory.log"
        done
    done
    cp "$RUN/cpuinfo.a72" "$SYSROOT/proc/cpuinfo"
    "$HOST_PY" - "$RUN/memory.log" "$($QEMU --version | sed -n 1p)" > benchmarks/arm-emulated-memory.json <<'EOF'
import json, platform, sys
rows = {}
for line in open(sys.argv[1]):
    cpu, tag, result = line.split(" ", 2)
    result = json.loads(result)
    name = result["backend"] + {"force-compiled": " forced CompiledModel", "imports": " imports only"}.get(tag, "")
    rows.setdefault(cpu, {})[name] = result
for cpu, found in rows.items():
    qemu = found.get("none", {}).get("peak_rss_mb")
    for name, result in found.items():
        if qemu and "peak_rss_mb" in result and result["backend"] != "none":
            result["net_of_qemu_mb"] = round(result["peak_rss_mb"] - qemu, 1)
        imports = found.get(f"{name} imports only", {}).get("peak_rss_mb")
        if imports and "peak_rss_mb" in result:
            result["model_and_clip_mb"] = round(result["peak_rss_mb"] - imports, 1)
print(json.dumps({"what": "peak RSS (ru_maxrss, MiB) of a fresh emulated python: default bundle, int8, one 1 s clip; "
                  "'none' is a bare python under qemu (qemu's own overhead), net_of_qemu_mb subtracts it; "
                  "'imports only' imports hear_edge and the runtime, no model: model_and_clip_mb is what loading the "
                  "bundle and classifying add (guest memory, as on a board; qemu's translated code grows with the "
                  "code run, most of it at import)",
                  "qemu": sys.argv[2], "host": platform.processor() or platform.machine(), "figures": rows}, indent=1))
EOF
    log "memory figures written to benchmarks/arm-emulated-memory.json"
    phase_done aarch64-memory
fi

echo "[arm-emu] timings:"
for line in "${TIMINGS[@]}"; do echo "[arm-emu]   $line"; done
echo "[arm-emu]   $(printf '%-22s %7ss' total "$(awk -v a="$T_START" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')")"
if [ "$rc" -ne 0 ]; then
    [ "$rc" -eq 124 ] && log "the emulated check ran past ARM_CHECK_TIMEOUT=${ARM_CHECK_TIMEOUT:-480}s"
    grep -q '^aarch64: ' "$RUN/check.log" || echo "aarch64: 0 passed, 1 failed (the emulated run exited with status $rc)"
    exit 1
fi
grep -qE '^aarch64: [0-9]+ passed, 0 failed$' "$RUN/check.log" || die "no passing summary line"
exit 0
