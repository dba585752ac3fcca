"""Read collectives out of XLA's optimized HLO text: kind, bytes per device, replica groups.

Used by `switchc verify` to hold the communication report against what XLA really runs. Bytes
follow the report's convention: the result buffer of one device (the reduced tensor of an
all-reduce, the gathered tensor of an all-gather, one side of an all-to-all).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")

DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s8": 1, "u8": 1, "pred": 1, "f64": 8, "s64": 8}

_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%(?P<name>[\w.\-]+) = (?P<type>.+?) (?P<kind>" + "|".join(KINDS) + r")(?:-start)?\("
)
_ARRAY = re.compile(r"\b(?P<dtype>[a-z]+[0-9]*)\[(?P<dims>[0-9,]*)\]")
_GROUPS_LIST = re.compile(r"replica_groups=\{(?P<groups>(?:\{[0-9,]*\},?)*)\}")
# [count,size]<=[dims] or [count,size]<=[dims]T(perm): iota(prod(dims)).reshape(dims).transpose(perm)
_GROUPS_IOTA = re.compile(
    r"replica_groups=\[(?P<count>[0-9]+),(?P<size>[0-9]+)\]<=\[(?P<dims>[0-9,]+)\](?:T\((?P<perm>[0-9,]+)\))?"
)
# mesh['axis_0'=2,...] {'axis_0'}, optionally with device_ids=([dims]T(perm)) before the braces: the
# devices laid out over the named axes (in iota order, or as device_ids says), grouped along `over`
_GROUPS_MESH = re.compile(
    r"replica_groups=mesh\[(?P<axes>[^\]]*)\]"
    r"(?:, device_ids=\(\[(?P<dims>[0-9,]+)\](?:T\((?P<perm>[0-9,]+)\))?\))?"
    r" \{(?P<over>[^}]*)\}"
)


@dataclass(frozen=True)
class HloCollective:
    name: str
    kind: str
    bytes_per_device: int
    group: tuple[int, ...] | None  # the device ids of its first replica group (None: not readable)
    op_name: str  # the jax op it came from (metadata), for the side-by-side listing
    dtypes: tuple[str, ...] = ()  # the element types of its result ("f32", "bf16", ...), in order

    @property
    def group_size(self) -> int:
        """Devices that take part in each group (1 when the groups are not readable)."""
        return len(self.group) if self.group else 1


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


def _numbers(text: str | None) -> list[int]:
    return [int(n) for n in (text or "").split(",") if n]


def _iota(dims: list[int], perm: list[int]) -> np.ndarray:
    """XLA's iota tile: 0..prod(dims)-1 laid out as `dims`, then transposed by `perm`."""
    ids = np.arange(int(np.prod(dims))).reshape(dims)
    return ids.transpose(perm) if perm else ids


def _first_group(line: str) -> tuple[int, ...] | None:
    """The device ids of a collective's first replica group, in XLA's three spellings (listed,
    iota, mesh axes); None for what is not read here: a sub-axis of a mesh, an explicit device list."""
    listed = _GROUPS_LIST.search(line)
    if listed and listed["groups"]:
        return tuple(_numbers(listed["groups"].split("}")[0].strip("{,")))
    iota = _GROUPS_IOTA.search(line)
    if iota:
        ids = _iota(_numbers(iota["dims"]), _numbers(iota["perm"])).reshape(int(iota["count"]), int(iota["size"]))
        return tuple(int(i) for i in ids[0])
    mesh = _GROUPS_MESH.search(line)
    if mesh and ":(" not in mesh["axes"] + mesh["over"]:  # a sub-axis ('a':(1)2): not read
        sizes = [(name, int(size)) for name, size in re.findall(r"'([^']+)'=([0-9]+)", mesh["axes"])]
        count = int(np.prod([size for _, size in sizes]))
        layout = _iota(_numbers(mesh["dims"]), _numbers(mesh["perm"])) if mesh["dims"] else np.arange(count)
        ids = layout.reshape([size for _, size in sizes])
        over = set(re.findall(r"'([^']+)'", mesh["over"]))
        first = tuple(slice(None) if name in over else 0 for name, _ in sizes)
        return tuple(int(i) for i in ids[first].reshape(-1))
    return None


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
                group=_first_group(line),
                op_name=op_name.group(1) if op_name else "",
                dtypes=tuple(dict.fromkeys(array["dtype"] for array in _ARRAY.finditer(match["type"]))),
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
