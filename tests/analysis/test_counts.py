"""Hand-computed parameters, FLOPs and memory of the tiny spec (tests/ir/tiny.py), op kind by op kind."""

from __future__ import annotations

import math

import pytest

from switchc.analysis.flops import FLOP_RULES, count_flops, op_flops
from switchc.analysis.memory import ACTIVATION_RULES, count_memory, optimizer_state_bytes, recomputation
from switchc.analysis.params import count_params
from switchc.ir import Layout, Mesh, Param, TensorType, build_graph
from switchc.ir import ops as irops
from switchc.ir.tensor import Dim
from switchc.passes import lower
from tests.ir.tiny import FLOAT, LI, LT, B, D, E, F, H, K, V, tiny

HK = H * K
ATTENTION = 4 * D * HK  # q, k, v, o
FFN = 2 * D * F  # wi, wo (ReLU)
EXPERTS = E * FFN
ROUTER = D * E
BIAS = 32 * H  # 32 buckets


def test_params_by_stack_kind_and_layer() -> None:
    report = count_params(build_graph(tiny()))
    encoder = 2 * ATTENTION + 5 * D + FFN + ROUTER + EXPERTS + BIAS  # 2 norms per block + final
    decoder = 4 * ATTENTION + 7 * D + FFN + ROUTER + EXPERTS + BIAS + D * V  # untied lm_head
    assert report.by_stack == {"shared": V * D, "encoder": encoder, "decoder": decoder}
    assert report.total == V * D + encoder + decoder
    assert report.experts == 2 * EXPERTS
    assert report.non_expert == report.total - 2 * EXPERTS
    assert report.embedding == 2 * V * D
    assert report.by_kind["router"] == 2 * ROUTER and report.by_kind["position"] == 2 * BIAS
    # Top-1 of 8: a token uses one expert's FFN in each Switch layer.
    assert report.active_per_token == report.total - 2 * (EXPERTS - FFN)
    layers = {row.layer: row for row in report.by_layer}
    assert layers["encoder.1"].params == ATTENTION + 2 * D + ROUTER + EXPERTS
    assert layers["encoder.1"].expert_params == EXPERTS
    assert sum(row.params for row in report.by_layer) == report.total


def test_tied_embeddings_drop_the_output_projection() -> None:
    untied = count_params(build_graph(tiny())).total
    assert count_params(build_graph(tiny("model.tie_embeddings=true"))).total == untied - D * V


def test_gated_ffn_has_three_matrices() -> None:
    relu = count_params(build_graph(tiny())).total
    gated = count_params(build_graph(tiny("model.ffn_activation=geglu"))).total
    assert gated - relu == 2 * D * F + 2 * E * D * F  # one more matrix per dense FFN and expert


def test_flops_of_every_op_kind() -> None:
    found = {f.name: f for f in op_flops(lower(tiny()))}
    enc_self = 2 * B * LI * D * HK * 4 + 2 * B * H * LI * LI * K * 2
    dec_self = 2 * B * LT * D * HK * 4 + 2 * B * H * LT * LT * K * 2
    cross = 2 * B * LT * D * HK * 2 + 2 * B * LI * D * HK * 2 + 2 * B * H * LT * LI * K * 2
    assert found["encoder/0/attention"].model_forward == enc_self
    assert found["decoder/0/attention"].model_forward == dec_self
    assert found["decoder/0/cross_attention"].model_forward == cross
    assert found["encoder/0/ffn"].model_forward == 2 * B * LI * D * F * 2
    assert found["decoder/logits"].model_forward == 2 * B * LT * D * V
    # Experts: the model counts one expert per token; the program runs every slot. All 4096
    # encoder tokens form one group: capacity ceil(4096 / 8 * 1.25) = 640 slots per expert.
    experts = found["encoder/1/experts"]
    assert experts.model_forward == 2 * B * LI * D * F * 2
    assert experts.executed_forward_global == E * 640 * 2 * D * F * 2
    assert found["decoder/1/experts"].executed_forward_global == E * 160 * 2 * D * F * 2
    # Router and combine run in the program but are not model FLOPs.
    assert found["encoder/1/router"].model_forward == 0
    assert found["encoder/1/router"].executed_forward_global == 2 * B * LI * D * E
    assert found["encoder/1/combine"].executed_forward_global == 2 * B * LI * 1 * D
    for name in ("encoder/embed", "encoder/1/dispatch", "encoder/0/attention_norm", "decoder/cross_entropy", "loss"):
        assert found[name].model_forward == found[name].executed_forward_global == 0


def test_train_step_flops_are_forward_plus_twice_forward_and_remat_adds_the_blocks() -> None:
    """Full remat runs every block's forward again, but for what the backward pass does not read:
    a block's last output projection (the dense FFN's wo: half its FLOPs with ReLU) or combine."""
    plain = count_flops(lower(tiny()))
    assert plain.model.train_step == 3 * plain.model.forward_per_step
    assert plain.model.forward_per_sequence * B == plain.model.forward_per_step
    assert plain.executed.train_step_per_device == 3 * plain.executed.forward_per_device
    remat = count_flops(lower(tiny("train.remat=full")))
    in_blocks = [f for f in op_flops(lower(tiny())) if f.layer[-1].isdigit()]
    not_read = [f.executed_forward_per_device // 2 for f in in_blocks if f.kind == "DenseFFN"]
    not_read += [f.executed_forward_per_device for f in in_blocks if f.kind == "Combine"]
    assert len(not_read) == 4 and all(not_read)  # a dense and a Switch block in each stack
    again = sum(f.executed_forward_per_device for f in in_blocks) - sum(not_read)
    assert remat.executed.recompute_per_device == again
    assert remat.executed.train_step_per_device == plain.executed.train_step_per_device + again
    assert remat.model == plain.model


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_remat_recomputes_what_the_backward_reads(dropout: float) -> None:
    """What of each op of a block the backward pass computes again: everything up to the last
    tensor it reads. A dropout mask comes from the random stream alone, so a dropout after the
    FFN does not make its output projection run again."""
    again = recomputation(lower(tiny("train.remat=full", f"model.dropout_rate={dropout}")))
    assert again["encoder/0/attention"] == "all"  # its output reaches ffn_norm, which keeps its input
    assert again["encoder/0/ffn"] == "internal"  # its hidden activations, not its output
    assert again["encoder/0/ffn_residual"] == "none"
    assert again["encoder/1/experts"] == "all"  # the combine keeps their outputs
    assert again["encoder/1/combine"] == again["encoder/1/ffn_residual"] == "none"
    assert again["decoder/1/cross_attention"] == "all"
    assert "encoder/embed" not in again and "decoder/logits" not in again  # outside blocks: kept
    if dropout:
        assert again["encoder/0/ffn_dropout"] == "internal"  # the mask only
        assert again["encoder/0/attention_dropout"] == "all"  # its output is read again


def test_executed_flops_per_device_split_over_the_mesh() -> None:
    single = count_flops(lower(tiny()))
    data = count_flops(lower(tiny("mesh.axes={data: 4}")))
    assert data.executed.forward_per_device * 4 == single.executed.forward_per_device
    # Over a model axis the router and combine are replicated: every device runs them whole.
    model = count_flops(lower(tiny("mesh.axes={model: 4}")))
    replicated = sum(f.executed_forward_global for f in op_flops(lower(tiny())) if f.kind in ("Router", "Combine"))
    split = single.executed.forward_per_device - replicated
    assert model.executed.forward_per_device == split // 4 + replicated
    assert model.model.train_step_per_device * 4 == single.model.train_step_per_device


def test_top2_doubles_model_expert_flops_and_capacity() -> None:
    top1 = {f.name: f for f in op_flops(lower(tiny()))}
    top2 = {f.name: f for f in op_flops(lower(tiny("moe.top_k=2")))}
    assert top2["encoder/1/experts"].model_forward == 2 * top1["encoder/1/experts"].model_forward
    assert top2["encoder/1/experts"].executed_forward_global == 2 * top1["encoder/1/experts"].executed_forward_global
    assert top2["encoder/1/combine"].executed_forward_global == 2 * top1["encoder/1/combine"].executed_forward_global


def test_every_op_kind_has_a_rule_in_every_table() -> None:
    assert set(FLOP_RULES) == set(irops.VOCABULARY)
    assert set(ACTIVATION_RULES) == set(irops.VOCABULARY)


def test_adafactor_factors_large_matrices_and_adam_keeps_two_moments() -> None:
    """Second moments in the parameter's dtype, Adafactor's momentum in float32: what optax's
    defaults (and the PyTorch program's optimizers) keep."""
    mesh = Mesh((("model", 2),), (("mlp", ("model",)),))
    weight = Param("w", TensorType((Dim("embed", 256, ("embed",)), Dim("mlp", 1024, ("mlp",))), "bfloat16"), "ffn")
    layout = Layout(((), ("model",)))
    local = 256 * 512
    assert optimizer_state_bytes(weight, layout, mesh, "adam", momentum=True) == 2 * local * 2
    # Row and column second moments of the local shard: 256 x 512 -> 512 + 256.
    assert optimizer_state_bytes(weight, layout, mesh, "adafactor", momentum=False) == (512 + 256) * 2
    assert optimizer_state_bytes(weight, layout, mesh, "adafactor", momentum=True) == (512 + 256) * 2 + local * 4
    # A dim under 128 is not worth factoring (optax): a full second moment.
    small = Param("q", TensorType((Dim("embed", 256), Dim("heads", 4), Dim("kv", 64)), "float32"), "attention")
    assert optimizer_state_bytes(small, Layout(((), (), ())), mesh, "adafactor", momentum=False) == 256 * 4 * 64 * 4
    scale = Param("s", TensorType((Dim("embed", 256),), "float32"), "norm")
    assert optimizer_state_bytes(scale, Layout(((),)), mesh, "adafactor", momentum=False) == 256 * 4


def test_memory_per_device_adds_up_and_remat_keeps_less() -> None:
    plain = count_memory(lower(tiny()))
    total = count_params(build_graph(tiny())).total
    assert plain.params_bytes == plain.grads_bytes == total * FLOAT
    assert plain.optimizer_bytes == 2 * total * FLOAT  # Adam: two moments in the parameters' dtype
    assert plain.per_device_bytes == 2 * plain.params_bytes + plain.optimizer_bytes + plain.activations_bytes
    assert plain.activations_full_remat_bytes < plain.activations_no_remat_bytes
    remat = count_memory(lower(tiny("train.remat=full")))
    assert remat.activations_bytes == plain.activations_full_remat_bytes
    # Four devices on the batch hold a quarter of the activations and all the weights.
    data = count_memory(lower(tiny("mesh.axes={data: 4}")))
    assert data.params_bytes == plain.params_bytes
    assert data.activations_no_remat_bytes == pytest.approx(plain.activations_no_remat_bytes / 4, rel=1e-9)


def test_activation_rules_by_hand_for_one_ffn() -> None:
    # A ReLU FFN keeps its input and its hidden activation, which both the output matmul and ReLU's
    # backward read: 1 x [B, L, F] (tests/backends/test_activation_memory.py checks the programs).
    ffn = build_graph(tiny()).nodes["encoder/0/ffn"]["op"]
    assert isinstance(ffn, irops.DenseFFN)
    saved = ACTIVATION_RULES[irops.DenseFFN](ffn, {d.name: d.size for d in ffn.loop()}.__getitem__)
    assert saved.inputs == (0,)
    assert saved.internal == math.prod((B, LI, F)) * FLOAT


@pytest.mark.parametrize(
    ("overrides", "copies", "router_bytes"),
    [
        (("moe.jitter_eps=0.01",), 2, FLOAT),  # the jittered input and the noise, float32
        (("moe.jitter_eps=0", "model.dtype=bfloat16"), 1, FLOAT),  # the input cast to the float32 router
        (("moe.jitter_eps=0",), 0, FLOAT),  # the router reads the input it is given
        (("moe.jitter_eps=0.01", "model.dtype=bfloat16", "moe.router_dtype=bfloat16"), 2, 2),
    ],
)
def test_the_router_keeps_its_matmul_input_in_the_router_dtype(
    overrides: tuple[str, ...], copies: int, router_bytes: int
) -> None:
    """Router: its input, float32 probabilities [T, E], and `copies` [T, D] tensors in router_dtype
    for the logits matmul's gradients (T = B x LI encoder tokens in one routing group)."""
    router = build_graph(tiny(*overrides)).nodes["encoder/1/router"]["op"]
    assert isinstance(router, irops.Router)
    saved = ACTIVATION_RULES[irops.Router](router, {d.name: d.size for d in router.loop()}.__getitem__)
    assert saved.inputs == (0,)
    assert saved.internal == B * LI * E * FLOAT + copies * B * LI * D * router_bytes
