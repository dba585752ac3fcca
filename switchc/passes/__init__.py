"""Passes over the IR: sharding (logical axes -> mesh axes, explicit collectives) and verification.

from switchc.passes import lower
graph = lower(load_spec("specs/switch-base.yaml"))   # build, verify, shard, verify
"""

from switchc.ir.build import build_graph
from switchc.ir.graph import Graph
from switchc.passes.shard import plan_reshard, shard
from switchc.passes.verify import verify
from switchc.spec import Spec

# The pipeline of DESIGN.md from Spec to a placed graph; the verifier runs after every pass.
PASSES = (shard,)


def lower(spec: Spec) -> Graph:
    """Build the graph of `spec` and run every pass, verifying before and after each."""
    graph = verify(build_graph(spec))
    for apply in PASSES:
        graph = verify(apply(graph))
    return graph


__all__ = ["PASSES", "lower", "plan_reshard", "shard", "verify"]
