"""Run a compat bundle's TFLite graphs (export --tflite-compat) on an old tflite-runtime, without hear-edge.

    python compat_harness.py BUNDLE INPUTS.npz OUTPUTS.npz

For interpreters hear-edge does not run on (tflite-runtime 2.7 and 2.8 wheels exist for Python 3.7-3.9
only); needs numpy and tflite_runtime. INPUTS.npz holds, per case, `CASE.pairs` (frames, 2 * bins) and
either `CASE.log_mel` (mels, 2 * frames: one window, run through the acoustic window graph) or
`CASE.acoustic` (frames, hidden). Each case runs in the smallest bucket that holds it, padded, as
hear_edge.run.inference does; OUTPUTS.npz gets `CASE.logits`, `CASE.pooled` (and `CASE.acoustic` from the
window graph), and `tflite_runtime_version`. Tensors are found by the names litert-torch gives them
(`..._args_N`, `..._output_N_...`), so no signature runner is needed (tflite-runtime 2.5 has none).
"""

import json
import os
import re
import sys

import numpy as np
from tflite_runtime import __version__ as RUNTIME_VERSION
from tflite_runtime.interpreter import Interpreter


def _numbered(details, pattern):
    found = {}
    for detail in details:
        match = re.search(pattern, detail["name"])
        if match is None:
            raise ValueError("tensor %r is not named as litert-torch names them" % detail["name"])
        found[int(match.group(1))] = detail
    return [found[i] for i in sorted(found)]


def run_file(path, inputs):
    """The file's outputs, in order, for `inputs` in the order of the torch module's arguments."""
    interpreter = Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    for detail, value in zip(_numbered(interpreter.get_input_details(), r"args_(\d+)"), inputs):
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).copy()
            for d in _numbered(interpreter.get_output_details(), r"output_(\d+)")]


def bucket_files(bundle, role):
    """[(bucket frames, path)] of the fp32 tflite graph of `role`, written one file per bucket."""
    with open(os.path.join(bundle, "manifest.json")) as handle:
        manifest = json.load(handle)
    for graph in manifest["graphs"]:
        if (graph["role"], graph["format"], graph["precision"]) == (role, "tflite", "fp32"):
            if not graph.get("bucket_files"):
                raise ValueError("%s: the %s graph is not written one file per bucket (export --tflite-compat)"
                                 % (bundle, role))
            return [(frames, os.path.join(bundle, entry["file"]))
                    for frames, entry in zip(graph["frame_buckets"], graph["bucket_files"])]
    raise ValueError("%s has no tflite fp32 %s graph" % (bundle, role))


def _bucket(files, frames):
    for bucket, path in files:
        if bucket >= frames:
            return bucket, path
    raise ValueError("%d frames exceed the longest bucket %d" % (frames, files[-1][0]))


def _padded(array, length):
    out = np.zeros((1, length) + array.shape[1:], np.float32)
    out[0, :array.shape[0]] = array
    return out


def main(bundle, inputs_path, outputs_path):
    windows, tasks = bucket_files(bundle, "acoustic_window"), bucket_files(bundle, "task")
    inputs = np.load(inputs_path)
    cases = sorted({key.rsplit(".", 1)[0] for key in inputs.files})
    outputs = {"tflite_runtime_version": np.array(RUNTIME_VERSION)}
    for case in cases:
        pairs = inputs[case + ".pairs"].astype(np.float32)
        frames = pairs.shape[0]
        if case + ".log_mel" in inputs.files:
            log_mel = inputs[case + ".log_mel"].astype(np.float32)
            bucket, path = _bucket(windows, frames)
            window = np.zeros((1, log_mel.shape[0], 2 * bucket), np.float32)
            window[0, :, :2 * frames] = log_mel
            acoustic = run_file(path, [window, np.array([frames], np.int32)])[0][0, :frames]
            outputs[case + ".acoustic"] = acoustic
        else:
            acoustic = inputs[case + ".acoustic"].astype(np.float32)
        bucket, path = _bucket(tasks, frames)
        logits, pooled = run_file(path, [_padded(acoustic, bucket), _padded(pairs, bucket),
                                         np.array([frames], np.int32)])
        outputs[case + ".logits"], outputs[case + ".pooled"] = logits[0], pooled[0]
    np.savez(outputs_path, **outputs)
    print("tflite-runtime %s: %d cases through %s" % (RUNTIME_VERSION, len(cases), bundle))


if __name__ == "__main__":
    main(*sys.argv[1:4])
