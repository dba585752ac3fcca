"""Draw an IR graph: Graphviz DOT text, and SVG / PNG through Graphviz's `dot` program.

DOT is written by hand (no pydot dependency). Nodes are colored by what they are: attention,
FFN, the Switch layer's routing and experts, collectives; gradient reductions hang off the op
whose parameters they reduce, with dashed edges.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from switchc.errors import PlainUserError
from switchc.files import write_output
from switchc.ir import ops
from switchc.ir.graph import Graph, info

FORMATS = (".dot", ".svg", ".png")

_COLORS: dict[type[ops.Op], str] = {
    ops.Attention: "#c6e5c0",
    ops.DenseFFN: "#f5e6b3",
    ops.ExpertFFN: "#a9cdf0",
    ops.Router: "#d4e4f7",
    ops.Dispatch: "#d4e4f7",
    ops.Combine: "#d4e4f7",
    ops.Group: "#eef3fa",
    ops.Ungroup: "#eef3fa",
    ops.AuxLoss: "#eef3fa",
    ops.RouterZLoss: "#eef3fa",
    ops.Embed: "#e8d9f2",
    ops.Logits: "#e8d9f2",
    ops.CrossEntropy: "#e8d9f2",
    ops.Loss: "#e8d9f2",
    ops.Output: "#e8d9f2",
}
_COLLECTIVE_COLOR = "#f7b27a"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(graph: Graph, node: str) -> str:
    op: ops.Op = graph.nodes[node]["op"]
    lines = [op.kind, node]
    if isinstance(op, ops.Collective):
        lines.append(f"{op.FORWARD or '-'} fwd / {op.BACKWARD or '-'} bwd over {','.join(op.mesh_axes)}")
        lines.append(f"{op.bytes_per_device:,} B/device")
    elif isinstance(op, ops.GradientAllReduce):
        lines.append(f"all-reduce over {','.join(op.mesh_axes)}: {op.bytes_per_device:,} B/device")
    else:
        out = op.output()
        if out is not None:
            lines.append(out.shape_text())
    layout = graph.nodes[node].get("layout")
    if layout is not None and layout.output is not None and not isinstance(op, ops.Collective):
        lines.append(f"layout {layout.output.text()}")
    return "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"') for line in lines)


def to_dot(graph: Graph) -> str:
    """The graph as Graphviz DOT text."""
    meta = info(graph)
    out = [
        f"digraph {_quote(meta.name)} {{",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica", fontsize=9];',
        '  edge [fontname="Helvetica", fontsize=8];',
    ]
    for node, data in graph.nodes(data=True):
        op = data["op"]
        color = (
            _COLLECTIVE_COLOR
            if isinstance(op, ops.Collective | ops.GradientAllReduce)
            else _COLORS.get(type(op), "#ffffff")
        )
        out.append(f'  {_quote(node)} [label="{_label(graph, node)}", fillcolor="{color}"];')
    for src, dst, data in graph.edges(data=True):
        if data.get("gradient"):
            out.append(f"  {_quote(src)} -> {_quote(dst)} [style=dashed];")
        else:
            out.append(f'  {_quote(src)} -> {_quote(dst)} [label="{data["port"]}"];')
    out.append("}")
    return "\n".join(out) + "\n"


def write_drawing(graph: Graph, path: Path) -> None:
    """Write `graph` to `path` as .dot text, or as .svg / .png rendered by Graphviz's `dot`."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise PlainUserError(
            f"cannot draw to '{path.name}': unknown format '{suffix}'", f"use one of {', '.join(FORMATS)}"
        )
    text = to_dot(graph)
    if suffix == ".dot":
        write_output(path, text)
        return
    program = shutil.which("dot")
    if program is None:
        raise PlainUserError(
            f"drawing {suffix} needs Graphviz's `dot` program, which is not installed",
            "install it (apt-get install graphviz, or brew install graphviz), or write a .dot file instead",
        )
    result = subprocess.run([program, f"-T{suffix[1:]}"], input=text.encode("utf-8"), capture_output=True, check=False)
    if result.returncode != 0:
        raise PlainUserError(f"Graphviz's dot failed: {result.stderr.decode(errors='replace').strip()}")
    write_output(path, result.stdout)
