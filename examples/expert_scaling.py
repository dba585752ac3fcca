"""Dense vs Switch vs MoE, and Switch-Base from 16 to 256 experts: what the cost model says.

The paper's central claim in numbers (Fedus, Zoph & Shazeer 2022, "Switch Transformers": Sec. 2.1
and 3.1): a Switch layer adds parameters without adding FLOPs per token, and top-2 MoE pays about
twice the expert FLOPs. This study builds every variant from the spec library with `--set`-style
overrides, all on one 16-device expert mesh, and prints for each: total and active parameters,
model FLOPs per sequence, and the all-to-all traffic per step and device.

    python examples/expert_scaling.py                 # prints the table
    python examples/expert_scaling.py --markdown out.md

It runs in a second or two (no training): the numbers come from switchc's IR and analyses.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from switchc.analysis import hardware, report_for
from switchc.spec import load_spec

MESH = "mesh.axes={expert: 16}"  # one mesh for all, so the traffic columns compare
VARIANTS: list[tuple[str, str, list[str]]] = [
    ("T5-Base (dense)", "t5-base", [MESH]),
    *[(f"Switch-Base, {n} experts", "switch-base", [f"moe.num_experts={n}", MESH]) for n in (16, 32, 64, 128, 256)],
    ("MoE-Base (top-2), 128 experts", "moe-base", [MESH]),
]


def rows() -> list[dict[str, float | str]]:
    out = []
    for label, name, overrides in VARIANTS:
        report = report_for(load_spec(name, overrides), hardware("tpuv3")).to_json()
        all_to_all = sum(
            c["count"] * c["bytes_per_device"] for c in report["comm"]["collectives"] if c["kind"] == "all-to-all"
        )
        out.append(
            {
                "model": label,
                "params": report["params"]["total"],
                "active": report["params"]["active_per_token"],
                "flops": report["flops"]["model"]["forward_per_sequence"],
                "all_to_all": all_to_all,
            }
        )
    return out


def table(found: list[dict[str, float | str]]) -> str:
    lines = [
        "| model | params | active params / token | forward FLOPs / sequence | all-to-all bytes / step / device |",
        "|---|---|---|---|---|",
    ]
    for row in found:
        lines.append(
            f"| {row['model']} | {float(row['params']) / 1e9:.2f}B | {float(row['active']) / 1e6:.0f}M "
            f"| {float(row['flops']) / 1e9:.1f}B | {float(row['all_to_all']) / 2**20:.0f} MiB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    text = table(rows())
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
