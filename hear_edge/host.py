"""What CPU this is: the features that pick onnxruntime's and LiteRT's int8 kernels."""

from __future__ import annotations

import ctypes
import platform
from functools import lru_cache
from pathlib import Path

# x86: VNNI decides between the vpdpbusd int8 kernel and vpmaddubsw (which can saturate with
# full-range signed weights); ARM: dot-product and i8mm instructions.
_INT8_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8",
               "asimd", "asimddp", "i8mm", "sve")


@lru_cache(maxsize=1)
def cpu_model_and_flags() -> tuple[str, tuple[str, ...]]:
    """(CPU model name, every feature flag) of the first CPU in /proc/cpuinfo (x86 `flags`, ARM
    `Features`); elsewhere what `platform` knows and no flags."""
    model, flags = "", ()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "cpu model") and not model:
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = tuple(value.split())
    except OSError:  # not Linux
        pass
    return model or platform.processor(), flags


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX tiles or AVX-512 BF16): where bf16 autocast
    trains about 3.5x faster than fp32; elsewhere it is emulated and slower."""
    return any(flag in cpu_model_and_flags()[1] for flag in ("amx_bf16", "avx512_bf16"))


def host_cpu() -> dict:
    """{"machine", "model", "flags"} of this host; flags limited to the ones int8 kernels care about."""
    model, flags = cpu_model_and_flags()
    return {"machine": platform.machine(), "model": model, "flags": [f for f in _INT8_FLAGS if f in flags]}


# glibc's mallopt parameters (malloc.h), and the size from which LiteRT's long-clip buffers get mappings of their own.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
LARGE_BLOCK_BYTES = 8 << 20
_large_blocks_mapped = False


def map_large_blocks(threshold_bytes: int = LARGE_BLOCK_BYTES) -> bool:
    """Have glibc serve blocks of `threshold_bytes` and more from mappings of their own, unmapped when
    freed, for the rest of the process (glibc only: False elsewhere, and when it was done already).

    glibc's own threshold rises to the largest block freed so far (up to 32 MiB): once a long clip's
    bucket is released, the next one's buffers are carved from the heap, whose holes stay resident
    (clips of 1-30 s on LiteRT: 12-20 MiB more at the peak). Fixed at 8 MiB, trimming at twice that as
    glibc pairs them, a clip's arrays below it stay on the heap: no more page faults than glibc's own
    (measured; at 1-4 MiB, 2-4x as many, and 30 s clips 5-15 % slower).
    """
    global _large_blocks_mapped
    if _large_blocks_mapped:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl's libc.so)
        return False
    _large_blocks_mapped = True
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 * threshold_bytes))


def release_freed_heap() -> None:
    """Return freed heap pages to the OS (glibc only; a no-op elsewhere). onnxruntime parses a
    graph file into memory it frees once the session exists, and glibc keeps such pages mapped:
    10 MB of resident memory for the default bundle."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def package_versions(packages) -> dict[str, str]:
    """{distribution: installed version} of those of `packages` installed here, in their order."""
    import importlib.metadata

    versions = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions
