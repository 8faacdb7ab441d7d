"""The shipped int8 graphs on a CPU without VNNI (Haswell: AVX2, no AVX-512), emulated by qemu.

onnxruntime's u8s8 kernel there (vpmaddubsw) adds two u8*s8 products in int16, which saturates
with full-range signed weights; the export's reduce_range (7-bit weights) is what keeps it exact.
Measured on the default model's 52 real recordings: full-range weights flip 4 of them under
Haswell (logits off by up to 0.95), reduce_range gives the native logits within 0.05.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from hear_edge import HearEdge

QEMU = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
# The clips where full-range weights went furthest under Haswell (0.46-0.95 logit difference, three
# top-1 flips); reduce_range gave 0-0.012 on them.
CLIPS = [REPO_ROOT / "tests" / "data" / name for name in (
    "real/sonicpi_elec_bell.wav", "real_voice/no/heroes_no.wav", "real_voice/stop/heroes_stop.wav",
    "real_voice/_unknown_/asterisk_z.wav", "real_voice/_unknown_/klettres_dog.wav", "real/sonicpi_misc_burp.wav")]
CHILD = """
import json, sys
from numpy._core._multiarray_umath import __cpu_features__  # from cpuid, which qemu emulates
from hear_edge import HearEdge
model = HearEdge.load(precision="int8")
print(json.dumps({"flags": [name for name, present in __cpu_features__.items() if present],
                  "logits": [model.classify(p, max_results=None).logits.tolist() for p in sys.argv[1:]]}))
"""


@pytest.mark.slow
@pytest.mark.skipif(QEMU is None or os.uname().machine != "x86_64",
                    reason="needs qemu-x86_64-static (Debian qemu-user-static) on an x86_64 host")
def test_int8_answers_on_an_avx2_only_cpu_equal_this_hosts():
    out = subprocess.run([QEMU, "-cpu", "Haswell", sys.executable, "-c", CHILD,
                          *map(str, CLIPS)], capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    emulated = json.loads(out.stdout.strip().splitlines()[-1])
    assert "AVX2" in emulated["flags"] and not any("VNNI" in f or "AVX512" in f for f in emulated["flags"])
    model = HearEdge.load(precision="int8")
    native = np.array([model.classify(p, max_results=None).logits for p in CLIPS])
    haswell = np.array(emulated["logits"])
    assert (native.argmax(1) == haswell.argmax(1)).all()
    assert np.abs(native - haswell).max() <= 0.1, np.abs(native - haswell).max()
