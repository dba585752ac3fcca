"""Switch-C builds and analyses with a graph independent of its expert count; missing rules are errors."""

from __future__ import annotations

import dataclasses

import pytest

from switchc.analysis import MissingRuleError, hardware, report_for
from switchc.analysis.flops import FLOP_RULES, count_flops
from switchc.ir import op_of
from switchc.ir.ops import Residual
from switchc.passes import lower
from switchc.spec import load_spec
from tests.ir.tiny import tiny


def test_switch_c_builds_and_analyses() -> None:
    """How long it takes is benchmarks/bench_analysis.py's to measure, not a test's: timed here, the
    test would fail on a busy machine (the suite runs two workers)."""
    report = report_for(load_spec("specs/switch-c.yaml"), hardware("tpuv3"))
    assert report.spec.num_experts == 2048


def test_the_graph_is_the_same_size_for_64_or_2048_experts() -> None:
    few = lower(load_spec("specs/switch-c.yaml", ["moe.num_experts=64", "mesh.axes={expert: 64}"]))
    many = lower(load_spec("specs/switch-c.yaml"))
    assert few.number_of_nodes() == many.number_of_nodes()


def test_an_op_without_a_rule_is_an_error_naming_it_and_its_span(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(FLOP_RULES, Residual)
    graph = lower(tiny())
    with pytest.raises(MissingRuleError) as info:
        count_flops(graph)
    message = str(info.value)
    assert "no rule for op kind Residual" in message
    assert "encoder/0/attention_residual" in message
    assert message.startswith("tiny.yaml:")


def test_a_subclass_does_not_inherit_a_rule() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Unknown(Residual):
        pass

    graph = lower(tiny())
    node = "encoder/0/attention_residual"
    fields = {f.name: getattr(op_of(graph, node), f.name) for f in dataclasses.fields(Residual)}
    graph.nodes[node]["op"] = Unknown(**fields)
    with pytest.raises(MissingRuleError, match="Unknown"):
        count_flops(graph)
