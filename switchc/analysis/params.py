"""Parameter counts: total, per stack, per layer, per kind, experts vs the rest, active per token.

Each op declares its parameters in the IR (switchc.ir.ops); a parameter shared by several ops
(the embedding table of both stacks and, when tied, the logits) is counted once, in the layer of
the first op that uses it. A parameter's stack is the first part of its name: encoder, decoder,
or shared.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from switchc.ir import ops
from switchc.ir.graph import Graph, all_ops


@dataclass(frozen=True)
class LayerParams:
    layer: str
    params: int
    expert_params: int


@dataclass(frozen=True)
class ParamsReport:
    total: int
    # Parameters one token's forward pass uses: everything except the experts it is not routed
    # to (top_k of num_experts in each Switch layer).
    active_per_token: int
    experts: int
    non_expert: int
    embedding: int  # the shared token embedding and, when untied, the output projection
    by_stack: Mapping[str, int]
    by_kind: Mapping[str, int]
    by_layer: tuple[LayerParams, ...]


def count_params(graph: Graph) -> ParamsReport:
    seen: set[str] = set()
    by_stack: dict[str, int] = defaultdict(int)
    by_kind: dict[str, int] = defaultdict(int)
    layer_total: dict[str, int] = defaultdict(int)
    layer_experts: dict[str, int] = defaultdict(int)
    inactive = 0
    for op in all_ops(graph):
        for param in op.params():
            if param.name in seen:
                continue
            seen.add(param.name)
            count = param.tensor.numel
            by_stack[param.name.split("/", 1)[0]] += count
            by_kind[param.kind] += count
            layer_total[op.layer] += count
            if param.kind == "expert":
                assert isinstance(op, ops.ExpertFFN)
                layer_experts[op.layer] += count
                inactive += count - count // op.num_experts * op.top_k
    total = sum(by_stack.values())
    experts = by_kind.get("expert", 0)
    layers = tuple(LayerParams(layer, n, layer_experts.get(layer, 0)) for layer, n in layer_total.items())
    return ParamsReport(
        total=total,
        active_per_token=total - inactive,
        experts=experts,
        non_expert=total - experts,
        embedding=by_kind.get("embedding", 0) + by_kind.get("logits", 0),
        by_stack=dict(by_stack),
        by_kind=dict(by_kind),
        by_layer=layers,
    )
