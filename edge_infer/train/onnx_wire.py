"""Just enough of the protobuf wire format to re-point an ONNX graph's outputs and append a linear
head.

The runtime has onnxruntime but not the ``onnx`` package (an export-time tool), and onnxruntime
cannot edit a graph. The edits ``train`` needs are small (new outputs, a MatMul + Add, their
weights, dropping the stock classifier), so they are done on the serialized bytes: every field the
edit does not touch is copied byte for byte, so the int8 backbone that serves is exactly the one the
features were computed with. Field numbers are onnx.proto's (ModelProto.graph = 7; GraphProto: node
1, initializer 5, output 12; ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..errors import ExportError

GRAPH = 7  # ModelProto.graph
NODE, INITIALIZER, OUTPUT, VALUE_INFO = 1, 5, 12, 13  # GraphProto
FLOAT = 1  # TensorProto.DataType


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return value, i
        shift += 7


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


@dataclass(frozen=True)
class Field:
    number: int
    raw: bytes  # the whole field (tag and value), to copy unchanged
    payload: bytes | None  # the value of a length-delimited field


def fields(buf: bytes) -> Iterator[Field]:
    i = 0
    while i < len(buf):
        start = i
        tag, i = _varint(buf, i)
        number, wire = tag >> 3, tag & 7
        payload = None
        if wire == 0:
            _, i = _varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = _varint(buf, i)
            payload, i = buf[i:i + n], i + n
        else:
            raise ExportError(f"not an ONNX model: protobuf wire type {wire} at byte {start}")
        yield Field(number, buf[start:i], payload)


def _strings(msg: bytes, number: int) -> list[str]:
    return [f.payload.decode() for f in fields(msg) if f.number == number and f.payload is not None]


def ld(number: int, payload: bytes) -> bytes:
    return _enc_varint(number << 3 | 2) + _enc_varint(len(payload)) + payload


def _int(number: int, value: int) -> bytes:
    return _enc_varint(number << 3) + _enc_varint(value)


def node(op: str, inputs: list[str], outputs: list[str], name: str) -> bytes:
    """NodeProto: input 1, output 2, name 3, op_type 4."""
    return (b"".join(ld(1, s.encode()) for s in inputs)
            + b"".join(ld(2, s.encode()) for s in outputs)
            + ld(3, name.encode()) + ld(4, op.encode()))


def tensor(name: str, array: np.ndarray) -> bytes:
    """TensorProto of float32: dims 1, data_type 2, name 8, raw_data 9 (little-endian)."""
    a = np.ascontiguousarray(array, dtype="<f4")
    return (b"".join(_int(1, d) for d in a.shape) + _int(2, FLOAT) + ld(8, name.encode())
            + ld(9, a.tobytes()))


def value_info(name: str, width: int | None) -> bytes:
    """A float (batch, width) tensor: name 1, type 2 (tensor_type 1: elem 1, shape 2)."""
    dims = ld(1, ld(2, b"batch")) + (ld(1, _int(1, width)) if width else b"")
    return ld(1, name.encode()) + ld(2, ld(1, _int(1, FLOAT) + ld(2, dims)))


def _graph(model: bytes) -> bytes:
    graphs = [f.payload for f in fields(model) if f.number == GRAPH and f.payload is not None]
    if len(graphs) != 1:
        raise ExportError("not an ONNX model: no graph")
    return graphs[0]


def _prune(graph_fields: list[Field], outputs: list[str]) -> list[Field]:
    """Drop the nodes nothing needs for ``outputs`` (walking back), then unused tensors."""
    nodes = [f for f in graph_fields if f.number == NODE]
    needed, keep = set(outputs), set()
    for k in range(len(nodes) - 1, -1, -1):  # nodes are topologically sorted
        msg = nodes[k].payload or b""
        if needed & set(_strings(msg, 2)):
            keep.add(k)
            needed |= set(_strings(msg, 1))
    kept_nodes = {id(nodes[k]) for k in keep}
    out = []
    for f in graph_fields:
        if f.number == NODE and id(f) not in kept_nodes:
            continue
        if f.number == INITIALIZER and _strings(f.payload or b"", 8)[0] not in needed:
            continue
        if f.number == VALUE_INFO and _strings(f.payload or b"", 1)[0] not in needed:
            continue
        out.append(f)
    return out


def edit(model: bytes, outputs: list[tuple[str, int | None]], nodes: list[bytes] = (),
         initializers: list[bytes] = ()) -> bytes:
    """``model`` with ``nodes`` and ``initializers`` appended and exactly ``outputs`` (name, width)
    as its outputs; what no output needs is dropped."""
    kept = [f for f in fields(_graph(model)) if f.number != OUTPUT]
    extra = [Field(NODE, ld(NODE, n), n) for n in nodes]
    extra += [Field(INITIALIZER, ld(INITIALIZER, t), t) for t in initializers]
    pruned = _prune(kept + extra, [name for name, _ in outputs])
    graph = b"".join(f.raw for f in pruned)
    graph += b"".join(ld(OUTPUT, value_info(n, w)) for n, w in outputs)
    return b"".join(ld(GRAPH, graph) if f.number == GRAPH else f.raw for f in fields(model))


def node_outputs(model: bytes) -> list[tuple[str, list[str], list[str]]]:
    """(op_type, inputs, outputs) of each node, in order."""
    return [(_strings(f.payload, 4)[0], _strings(f.payload, 1), _strings(f.payload, 2))
            for f in fields(_graph(model)) if f.number == NODE and f.payload is not None]



def initializer(model: bytes, name: str) -> np.ndarray:
    """A float32 (1), uint8 (2) or int8 (3) initializer of ``model`` as an array."""
    types = {1: "<f4", 2: "u1", 3: "i1"}
    for f in fields(_graph(model)):
        if f.number != INITIALIZER or f.payload is None or _strings(f.payload, 8) != [name]:
            continue
        dims, dtype, raw, ints = [], 0, b"", []
        for g in fields(f.payload):
            if g.number == 1 and g.payload is None:
                dims.append(_varint(g.raw, 1)[0])
            elif g.number == 1:  # packed dims
                i = 0
                while i < len(g.payload):
                    d, i = _varint(g.payload, i)
                    dims.append(d)
            elif g.number == 2:
                dtype = _varint(g.raw, 1)[0]
            elif g.number == 9:
                raw = g.payload or b""
            elif g.number == 4:  # float_data: packed, or one fixed32 per field
                raw += g.payload if g.payload is not None else g.raw[1:]
            elif g.number == 5:  # int32_data (packed varints): how small int8 tensors are stored
                i, data = 0, g.payload if g.payload is not None else g.raw[1:]
                while i < len(data):
                    d, i = _varint(data, i)
                    ints.append(d - (1 << 64) if d >= 1 << 63 else d)
        if ints and dtype in (2, 3):
            return np.array(ints, dtype=types[dtype]).reshape(dims)
        if dtype not in types or not raw:
            raise ExportError(f"initializer {name!r}: data type {dtype} or storage not supported")
        return np.frombuffer(raw, dtype=types[dtype]).reshape(dims)
    raise ExportError(f"the model has no initializer {name!r}")
