"""Properties over random valid specs: totals are the sums of their parts, and Switch FLOPs
behave as the paper says (independent of the number of experts; top-2 is twice top-1)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchc.analysis import hardware
from switchc.analysis.flops import op_flops
from switchc.analysis.report import analyse
from switchc.passes import lower
from switchc.spec import Spec
from tests.ir.tiny import tiny, tiny_dense

CPU = hardware("cpu")
MESHES = [
    "{data: 1}",
    "{data: 2}",
    "{model: 2}",
    "{data: 2, model: 2}",
    "{data: 2, expert: 2}",
    "{expert: 2, model: 2}",
    "{data: 2, expert: 2, model: 2}",
]


@dataclass(frozen=True)
class Shape:
    overrides: tuple[str, ...]

    def spec(self, *more: str) -> Spec:
        """The spec with `more` overrides replacing those of the same keys."""
        keys = {item.split("=", 1)[0] for item in more}
        return tiny(*(o for o in self.overrides if o.split("=", 1)[0] not in keys), *more)


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    layers = draw(st.integers(1, 3))
    experts = draw(st.sampled_from([2, 4, 8]))
    overrides = (
        f"model.d_model={draw(st.sampled_from([16, 32, 64]))}",
        f"model.d_ff={draw(st.sampled_from([32, 64]))}",
        f"model.d_kv={draw(st.sampled_from([8, 16]))}",
        f"model.num_heads={draw(st.sampled_from([2, 4]))}",
        f"model.encoder_layers={layers}",
        f"model.decoder_layers={draw(st.integers(1, 3))}",
        f"model.vocab_size={draw(st.sampled_from([64, 128]))}",
        f"model.ffn_activation={draw(st.sampled_from(['relu', 'gelu', 'geglu', 'swiglu']))}",
        f"model.tie_embeddings={draw(st.sampled_from(['true', 'false']))}",
        f"model.dtype={draw(st.sampled_from(['float32', 'bfloat16']))}",
        f"moe.num_experts={experts}",
        f"moe.expert_every={draw(st.integers(1, layers))}",
        f"moe.top_k={draw(st.integers(1, min(2, experts)))}",
        f"moe.group_size={draw(st.sampled_from([16, 64, 4096]))}",
        f"moe.capacity_factor.train={draw(st.sampled_from([1.0, 1.25, 2.0]))}",
        f"train.batch_size={draw(st.sampled_from([8, 16]))}",
        f"train.inputs_length={draw(st.sampled_from([16, 32]))}",
        f"train.targets_length={draw(st.sampled_from([8, 16]))}",
        f"train.remat={draw(st.sampled_from(['none', 'full']))}",
        f"train.optimizer.name={draw(st.sampled_from(['adam', 'adafactor']))}",
        f"mesh.axes={draw(st.sampled_from(MESHES))}",
    )
    return Shape(overrides)


SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(shapes())
def test_totals_are_the_sums_of_their_parts(shape: Shape) -> None:
    report = analyse(lower(shape.spec()), CPU)
    p, f, m, c = report.params, report.flops, report.memory, report.comm
    assert sum(p.by_stack.values()) == p.total == sum(row.params for row in p.by_layer)
    assert p.experts + p.non_expert == p.total
    assert p.active_per_token <= p.total
    assert sum(row.model_forward for row in f.by_layer) == f.model.forward_per_step
    assert sum(f.by_op_kind.values()) == f.model.forward_per_step
    assert f.model.train_step == f.model.forward_per_step + f.model.backward_per_step
    assert f.executed.train_step_per_device == (
        f.executed.forward_per_device + f.executed.backward_per_device + f.executed.recompute_per_device
    )
    assert sum(row.executed_forward_flops_per_device for row in report.layers) == f.executed.forward_per_device
    assert m.per_device_bytes == m.params_bytes + m.grads_bytes + m.optimizer_bytes + m.activations_bytes
    assert c.bytes_per_device == sum(e.bytes_per_device * e.count for e in c.collectives)
    assert c.bytes_per_device == sum(s.bytes_per_device for s in c.summary)
    assert sum(row.comm_bytes_per_device for row in report.layers) == c.bytes_per_device
    t = report.time
    assert t.step_seconds == t.compute_seconds + t.exposed_comm_seconds


def expert_flops(spec: Spec) -> tuple[int, int]:
    """(model, executed global) forward FLOPs of all expert layers."""
    found = [f for f in op_flops(lower(spec)) if f.kind == "ExpertFFN"]
    return sum(f.model_forward for f in found), sum(f.executed_forward_global for f in found)


def model_forward(spec: Spec) -> int:
    return sum(f.model_forward for f in op_flops(lower(spec)))


@SETTINGS
@given(shapes())
def test_switch_model_flops_do_not_grow_with_the_number_of_experts(shape: Shape) -> None:
    few = model_forward(shape.spec("moe.num_experts=2", "moe.top_k=1"))
    many = model_forward(shape.spec("moe.num_experts=16", "moe.top_k=1"))
    assert few == many


@SETTINGS
@given(shapes())
def test_top2_expert_flops_are_twice_top1(shape: Shape) -> None:
    one = expert_flops(shape.spec("moe.top_k=1"))
    two = expert_flops(shape.spec("moe.top_k=2"))
    assert two[0] == 2 * one[0]
    assert two[1] >= one[1]  # more slots per expert (capped at the group size)


@SETTINGS
@given(shapes())
def test_top1_switch_model_flops_equal_the_dense_twin(shape: Shape) -> None:
    switch = model_forward(shape.spec("moe.top_k=1"))
    dense_overrides = [o for o in shape.overrides if not o.startswith("moe.")]
    assert switch == model_forward(tiny_dense(*dense_overrides))
