"""The sharding pass: collectives for each parallelism mode of PAPER.md Sec. 6, counted by hand.

The tiny spec of tests/ir/tiny.py: batch 32, 128 input and 32 target tokens, d_model 128, d_ff 512,
4 heads x 32, vocab 4096, 8 experts in block 1 of each stack, float32 (4 bytes), untied logits.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from switchc.analysis import hardware
from switchc.analysis.comm import count_comm
from switchc.analysis.params import count_params
from switchc.ir import Layout, Mesh, TensorType, op_of
from switchc.ir.tensor import Dim
from switchc.passes import lower, plan_reshard
from switchc.spec import load_spec
from tests.ir.tiny import FLOAT, LI, LT, B, D, E, F, V, tiny

# Ops that own parameters: shared embedding, 2 position biases, logits; encoder: 2 norms +
# attention per block, final norm, FFN (block 0), router + experts (block 1); decoder: 3 norms and
# 2 attentions per block, final norm, FFN, router + experts.
PARAM_OPS = 1 + 2 + 1 + (2 * 3 + 1 + 1 + 2) + (2 * 5 + 1 + 1 + 2)
EXPERT_OPS = 2


def collectives(mesh: str) -> dict[tuple[str, str, tuple[str, ...]], tuple[int, int]]:
    """(phase, kind, mesh axes) -> (count, total bytes per device) for switch-tiny on `mesh`."""
    graph = lower(tiny(f"mesh.axes={mesh}"))
    found: dict[tuple[str, str, tuple[str, ...]], list[int]] = defaultdict(lambda: [0, 0])
    for entry in count_comm(graph, hardware("cpu").profile).collectives:
        key = (entry.phase, entry.kind, entry.mesh_axes)
        found[key][0] += entry.count
        found[key][1] += entry.count * entry.bytes_per_device
    return {key: (count, size) for key, (count, size) in found.items()}


def total_params() -> int:
    return count_params(lower(tiny())).total


def test_data_parallel_is_one_gradient_all_reduce_per_op_and_the_loss() -> None:
    found = collectives("{data: 4}")
    assert found == {
        ("forward", "all-reduce", ("data",)): (1, FLOAT),  # the loss, summed over the batch
        ("gradient", "all-reduce", ("data",)): (PARAM_OPS, total_params() * FLOAT),
    }


def model_parallel_sums(
    batch: int, tokens_enc: int, tokens_dec: int, capacity_enc: int, capacity_dec: int
) -> tuple[int, int]:
    """(count, bytes) of the forward all-reduces over `model`: every sum over a split dim."""
    enc, dec = batch * LI * D * FLOAT, batch * LT * D * FLOAT
    groups_enc, groups_dec = 1, 1
    experts_enc = groups_enc * E * capacity_enc * D * FLOAT
    experts_dec = groups_dec * E * capacity_dec * D * FLOAT
    # encoder: 2 attentions, 1 FFN, the embedding; decoder: 4 attentions, 1 FFN, the embedding;
    # the two expert layers; cross-entropy statistics [batch, targets] float32
    count = 4 + 6 + 2 + 1
    size = 4 * enc + 6 * dec + experts_enc + experts_dec + batch * LT * FLOAT
    assert tokens_enc == batch * LI and tokens_dec == batch * LT
    return count, size


def model_parallel_input_grads(batch: int, capacity_enc: int, capacity_dec: int) -> tuple[int, int]:
    """(count, bytes) of the backward all-reduces over `model`: inputs of split matmuls."""
    enc, dec = batch * LI * D * FLOAT, batch * LT * D * FLOAT
    # x of 6 attentions, the cross-attention memory twice, 2 FFNs, 2 expert layers, the logits
    count = 6 + 2 + 2 + 2 + 1
    size = (2 * enc + 4 * dec) + 2 * enc + (enc + dec) + E * D * FLOAT * (capacity_enc + capacity_dec) + dec
    return count, size


def test_model_parallel_all_reduces_forward_and_backward_and_no_gradient_reduction() -> None:
    found = collectives("{model: 4}")
    # All 32 sequences on every device: one group of 4096 (encoder) / 1024 (decoder) tokens,
    # capacity ceil(4096 / 8 * 1.25) = 640 and ceil(1024 / 8 * 1.25) = 160.
    assert found == {
        ("forward", "all-reduce", ("model",)): model_parallel_sums(B, B * LI, B * LT, 640, 160),
        ("backward", "all-reduce", ("model",)): model_parallel_input_grads(B, 640, 160),
    }


def test_data_and_model_parallel_split_the_batch_in_the_model_all_reduces() -> None:
    found = collectives("{data: 2, model: 2}")
    half = B // 2  # 16 sequences per device: 2048 / 512 tokens, capacity 320 / 80
    assert found[("forward", "all-reduce", ("model",))] == model_parallel_sums(half, half * LI, half * LT, 320, 80)
    assert found[("backward", "all-reduce", ("model",))] == model_parallel_input_grads(half, 320, 80)
    assert found[("forward", "all-reduce", ("data",))] == (1, FLOAT)
    count, size = found[("gradient", "all-reduce", ("data",))]
    assert count == PARAM_OPS
    graph = lower(tiny())
    # Weights with a heads, mlp or vocab dim are split in two over `model`; norms and routers are not.
    split = replicated = 0
    for node in graph.nodes:
        for param in op_of(graph, node).params():
            if any(d.name in ("heads", "mlp", "vocab") for d in param.tensor.dims):
                split += param.tensor.numel
            elif node.split("/")[-1] != "embed" or param.name == "shared/embedding":
                replicated += param.tensor.numel
    split -= V * D  # the shared embedding is declared by both embeds: count it once
    assert size == (split // 2 + replicated) * FLOAT


def test_expert_and_data_parallel_all_to_all_and_expert_gradients_only_over_data() -> None:
    found = collectives("{data: 2, expert: 4}")
    # Tokens split over data x expert = 8: 4 sequences, 512 / 128 tokens, capacity 80 / 20.
    dispatch = E * (80 + 20) * D * FLOAT  # [groups=1, experts, capacity, d_model] per Switch layer
    assert found[("forward", "all-to-all", ("expert",))] == (4, 2 * dispatch)  # dispatch + combine
    assert found[("backward", "all-to-all", ("expert",))] == (4, 2 * dispatch)
    assert found[("forward", "all-reduce", ("data", "expert"))] == (1, FLOAT)
    expert_params = 2 * E * 2 * D * F  # two layers of 8 experts, wi and wo
    dense_count, dense_bytes = found[("gradient", "all-reduce", ("data", "expert"))]
    assert dense_count == PARAM_OPS - EXPERT_OPS
    assert dense_bytes == (total_params() - expert_params) * FLOAT
    # Each device holds 2 of the 8 experts; only the copies on the other data row share them.
    assert found[("gradient", "all-reduce", ("data",))] == (EXPERT_OPS, expert_params // 4 * FLOAT)
    assert len(found) == 5


def test_expert_model_and_data_parallel_all_together() -> None:
    found = collectives("{data: 2, expert: 2, model: 2}")
    # Tokens split over data x expert = 4: 8 sequences, 1024 / 256 tokens, capacity 160 / 40.
    eighth = B // 4
    dispatch = E * (160 + 40) * D * FLOAT
    assert found[("forward", "all-to-all", ("expert",))] == (4, 2 * dispatch)
    assert found[("backward", "all-to-all", ("expert",))] == (4, 2 * dispatch)
    assert found[("forward", "all-reduce", ("model",))] == model_parallel_sums(
        eighth, eighth * LI, eighth * LT, 160, 40
    )
    assert found[("backward", "all-reduce", ("model",))] == model_parallel_input_grads(eighth, 160, 40)
    assert found[("gradient", "all-reduce", ("data",))][0] == EXPERT_OPS
    assert found[("gradient", "all-reduce", ("data", "expert"))][0] == PARAM_OPS - EXPERT_OPS


def test_switch_base_dispatch_moves_experts_times_capacity_times_d_model_in_bfloat16() -> None:
    graph = lower(load_spec("specs/switch-base.yaml"))
    dispatch = [op_of(graph, n) for n in graph.nodes if n.endswith("experts/all_to_all.in0")]
    assert len(dispatch) == 12
    # 2048 x 512 encoder tokens over 32 devices: 8 groups of 4096, capacity 40, bfloat16.
    encoder = next(op for op in dispatch if op.name.startswith("encoder"))
    assert encoder.bytes_per_device == 8 * 128 * 40 * 768 * 2
    assert encoder.group_size == 32


# ---- resharding rules ---------------------------------------------------------------------------

MESH = Mesh((("data", 2), ("expert", 4), ("model", 2)), ())
SLOTS = TensorType((Dim("groups", 8), Dim("experts", 8), Dim("capacity", 4), Dim("embed", 16)), "float32")


def kinds_of(src: Layout, dst: Layout) -> list[tuple[str, tuple[str, ...]]]:
    return [(step.kind.__name__, step.axes) for step in plan_reshard(SLOTS, src, dst, MESH)]


def test_an_axis_moving_between_dims_is_an_all_to_all() -> None:
    tokens = Layout((("data", "expert"), (), (), ()))
    experts = Layout((("data",), ("expert",), (), ()))
    assert kinds_of(tokens, experts) == [("AllToAll", ("expert",))]
    assert kinds_of(experts, tokens) == [("AllToAll", ("expert",))]


def test_partial_sums_reduce_then_reshard() -> None:
    partial = Layout((("data",), ("expert",), (), ()), ("model",))
    assert kinds_of(partial, Layout((("data", "expert"), (), (), ()))) == [
        ("AllReduce", ("model",)),
        ("AllToAll", ("expert",)),
    ]
    assert kinds_of(partial, Layout((("data",), ("expert",), (), ("model",)))) == [("ReduceScatter", ("model",))]


def test_new_splits_are_slices_and_removed_splits_gathers() -> None:
    whole = Layout(((), (), (), ()))
    split = Layout(((), ("model",), (), ()))
    assert kinds_of(whole, split) == [("Shard", ("model",))]
    assert kinds_of(split, whole) == [("AllGather", ("model",))]
    assert kinds_of(split, split) == []


def test_a_partial_sum_cannot_be_made_from_a_whole_value() -> None:
    with pytest.raises(ValueError, match="partial"):
        plan_reshard(SLOTS, Layout(((), (), (), ())), Layout(((), (), (), ()), ("model",)), MESH)
