"""One signature of a .tflite file as a model of its own, for the tflite Interpreter.

The Interpreter's XNNPACK delegate packs the weights of every subgraph of a file at the first
invoke (a bundle's graph has one subgraph per length bucket): a file cut to the bucket a clip needs
packs one copy. The cut keeps the operator codes, one subgraph and its signature, every buffer entry
(so tensor indices hold) and the data of the buffers that subgraph or the metadata use.
"""

from __future__ import annotations

import mmap
from pathlib import Path

_ALIGN = 64  # external buffer data, aligned as the converter aligns it


def _schema():
    from ai_edge_litert import schema_py_generated  # ships with ai-edge-litert (tflite-runtime lacks it)

    return schema_py_generated


def available() -> bool:
    """Whether files can be cut here (ai-edge-litert's schema module and flatbuffers import)."""
    try:
        _schema()
        import flatbuffers  # noqa: F401
    except ImportError:
        return False
    return True


class TfliteFile:
    """A .tflite file's signatures and their output shapes, read from its flatbuffer, and its cuts."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._settled = {}  # signature -> where its cut's data starts
        schema = _schema()
        with open(self.path, "rb") as handle:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)  # closed once no array views it
        model = schema.Model.GetRootAsModel(data, 0)
        self.signatures, self._subgraphs, self._output_shapes = [], {}, {}
        for i in range(model.SignatureDefsLength()):
            signature = model.SignatureDefs(i)
            key, subgraph = signature.SignatureKey().decode(), signature.SubgraphIndex()
            self.signatures.append(key)
            self._subgraphs[key] = subgraph
            tensors = model.Subgraphs(subgraph)
            shapes = {}
            for j in range(signature.OutputsLength()):
                output = signature.Outputs(j)
                tensor = tensors.Tensors(output.TensorIndex())
                shapes[output.Name().decode()] = [int(d) for d in tensor.ShapeAsNumpy()] \
                    if tensor.ShapeLength() else []
            self._output_shapes[key] = shapes

    def output_shapes(self, key: str) -> dict[str, list[int]]:
        """{output name: shape} of signature `key`, as the file declares them."""
        return self._output_shapes[key]

    def cut(self, key: str) -> bytes:
        """The model of signature `key` alone, as bytes for `Interpreter(model_content=...)`."""
        import flatbuffers

        schema = _schema()
        with open(self.path, "rb") as handle:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)  # closed once no array views it
        model = schema.Model.GetRootAsModel(data, 0)
        source = model.SignatureDefs(self.signatures.index(key))
        cut = schema.ModelT()
        cut.version, cut.description = model.Version(), model.Description()
        cut.operatorCodes = [schema.OperatorCodeT.InitFromObj(model.OperatorCodes(i))
                             for i in range(model.OperatorCodesLength())]
        cut.subgraphs = [schema.SubGraphT.InitFromObj(model.Subgraphs(source.SubgraphIndex()))]
        signature = schema.SignatureDefT.InitFromObj(source)
        signature.subgraphIndex = 0
        cut.signatureDefs = [signature]
        cut.metadata = [schema.MetadataT.InitFromObj(model.Metadata(i)) for i in range(model.MetadataLength())]
        used = {tensor.buffer for tensor in cut.subgraphs[0].tensors} | {m.buffer for m in cut.metadata}
        buffers, external = [], []  # external: (buffer entry, its bytes), laid out after the flatbuffer
        for i in range(model.BuffersLength()):
            entry, buffer = schema.BufferT(), model.Buffers(i)
            if i in used and buffer.DataLength():
                entry.data = buffer.DataAsNumpy().copy()
            elif i in used and buffer.Offset() > 1:
                external.append((entry, bytes(data[buffer.Offset():buffer.Offset() + buffer.Size()])))
            buffers.append(entry)
        cut.buffers = buffers

        def pack(start: int) -> bytes:
            position = start
            for entry, blob in external:
                entry.offset, entry.size = position, len(blob)
                position += -(-len(blob) // _ALIGN) * _ALIGN
            builder = flatbuffers.Builder(1 << 20)
            builder.Finish(cut.Pack(builder), file_identifier=b"TFL3")
            return bytes(builder.Output())

        # The data's offsets are written into the flatbuffer, whose size depends on them: settle it (a
        # long bucket is cut again whenever it is reopened: from where it settled, one pack of two).
        start, head = self._settled.get(key, 0), b""
        for _ in range(4):
            head = pack(start)
            if start >= len(head) and start - len(head) < 2 * _ALIGN:
                break
            start = -(-(len(head) + _ALIGN) // _ALIGN) * _ALIGN
        else:
            head = pack(start)
        self._settled[key] = start
        parts = [head, bytes(start - len(head))]
        for entry, blob in external:
            parts += [blob, bytes(-len(blob) % _ALIGN)]
        return b"".join(parts)
