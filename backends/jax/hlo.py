"""Read collectives out of XLA's optimized HLO text: kind, bytes per device, replica groups.

Used by `switchc verify` to hold the communication report against what XLA really runs. Bytes
follow the report's convention: the result buffer of one device (the reduced tensor of an
all-reduce, the gathered tensor of an all-gather, one side of an all-to-all).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")

DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s8": 1, "u8": 1, "pred": 1, "f64": 8, "s64": 8}

_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%(?P<name>[\w.\-]+) = (?P<type>.+?) (?P<kind>" + "|".join(KINDS) + r")(?:-start)?\("
)
_ARRAY = re.compile(r"\b(?P<dtype>[a-z]+[0-9]*)\[(?P<dims>[0-9,]*)\]")
_GROUPS_LIST = re.compile(r"replica_groups=\{(?P<groups>(?:\{[0-9,]*\},?)*)\}")
_GROUPS_IOTA = re.compile(r"replica_groups=\[(?P<count>[0-9]+),(?P<size>[0-9]+)\]")
_GROUPS_MESH = re.compile(r"replica_groups=mesh\[(?P<axes>[^\]]*)\][^{]*\{(?P<over>[^}]*)\}")


@dataclass(frozen=True)
class HloCollective:
    name: str
    kind: str
    bytes_per_device: int
    group_size: int  # devices that take part in each group (1 when unknown)
    op_name: str  # the jax op it came from (metadata), for the side-by-side listing


def _bytes(type_text: str) -> int:
    total = 0
    for match in _ARRAY.finditer(type_text):
        dtype = match["dtype"]
        if dtype not in DTYPE_BYTES:
            continue
        count = 1
        for dim in filter(None, match["dims"].split(",")):
            count *= int(dim)
        total += count * DTYPE_BYTES[dtype]
    return total


def _group_size(line: str) -> int:
    listed = _GROUPS_LIST.search(line)
    if listed and listed["groups"]:
        first = listed["groups"].split("}")[0].strip("{,")
        return len([d for d in first.split(",") if d])
    iota = _GROUPS_IOTA.search(line)
    if iota:
        return int(iota["size"])
    mesh = _GROUPS_MESH.search(line)
    if mesh:
        sizes = dict(re.findall(r"'([^']+)'=([0-9]+)", mesh["axes"]))
        over = re.findall(r"'([^']+)'", mesh["over"])
        size = 1
        for axis in over:
            size *= int(sizes.get(axis, 1))
        return size
    return 1


def collectives(hlo: str) -> list[HloCollective]:
    """Every collective instruction of an optimized HLO module (async pairs counted once)."""
    found = []
    for line in hlo.splitlines():
        match = _INSTRUCTION.match(line)
        if match is None:
            continue
        op_name = re.search(r'op_name="([^"]*)"', line)
        found.append(
            HloCollective(
                name=match["name"],
                kind=match["kind"],
                bytes_per_device=_bytes(match["type"]),
                group_size=_group_size(line),
                op_name=op_name.group(1) if op_name else "",
            )
        )
    return found


_DEFINITION = re.compile(r"^\s*(?:ROOT\s+)?%(?P<name>[\w.\-]+) = (?P<type>\S+?)(?:\{[^}]*\})? (?P<op>[\w\-]+)\(")
_DOT = re.compile(r"dot\(%(?P<lhs>[\w.\-]+), %(?P<rhs>[\w.\-]+)\).*lhs_contracting_dims=\{(?P<contract>[0-9,]*)\}")


def _dims(type_text: str) -> list[int]:
    match = _ARRAY.search(type_text)
    if match is None:
        return []
    return [int(d) for d in match["dims"].split(",") if d]


def dot_flops(hlo: str) -> float:
    """2 x multiply-adds of every dot in the module, fusions included (2 * |output| * |contraction|).

    XLA's own cost analysis also counts elementwise work; this isolates the matmuls, which is
    what the report's executed FLOPs count.
    """
    shapes: dict[str, list[int]] = {}
    total = 0.0
    for line in hlo.splitlines():
        definition = _DEFINITION.match(line)
        if definition is None:
            continue
        shapes[definition["name"]] = _dims(definition["type"])
        if definition["op"] != "dot":
            continue
        dot = _DOT.search(line)
        if dot is None:
            raise ValueError(f"unreadable dot instruction: {line.strip()[:200]}")
        lhs = shapes[dot["lhs"]]
        contraction = 1
        for index in filter(None, dot["contract"].split(",")):
            contraction *= lhs[int(index)]
        output = 1
        for size in shapes[definition["name"]]:
            output *= size
        total += 2.0 * output * contraction
    return total


def convert_elements(hlo: str) -> int:
    """The elements every `convert` of the module writes, fusions included. XLA's cost analysis
    counts a FLOP for each, though a convert does no arithmetic; XLA:CPU's float normalization
    wraps most ops of a bfloat16 program in converts to and from float32."""
    total = 0
    for line in hlo.splitlines():
        definition = _DEFINITION.match(line)
        if definition is not None and definition["op"] == "convert":
            elements = 1
            for size in _dims(definition["type"]):
                elements *= size
            total += elements
    return total
