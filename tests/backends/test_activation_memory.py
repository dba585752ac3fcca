"""The cost model's activation memory rules (switchc/analysis/memory.py ACTIVATION_RULES) against
what the programs' autodiff really keeps for the backward pass, op kind by op kind.

JAX: the residuals jax.ad_checkpoint.print_saved_residuals lists for the runtime's function. PyTorch:
the tensors autograd saves (torch.autograd.graph.saved_tensors_hooks) in the runtime's module,
each storage once. Both leave out the function's own arguments (the input and the weights), which
the rules count elsewhere. What remains must be a rule's `internal` bytes exactly, at two batch
sizes, with two differences the rules know of: the PyTorch program keeps no dropout masks (its
backward draws them again), and the experts keep their input (which the rule counts as the
slots, input 0) as the expert-major copy their matmuls read. So nothing the size of the weights
may be kept either (a stacked copy of q/k/v or wi_0/wi_1 was, in both programs).
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import pytest
import torch
from jax.ad_checkpoint import print_saved_residuals
from switchc.backends.jax.runtime import layers as jax_layers
from switchc.backends.jax.runtime import moe as jax_moe
from switchc.backends.torch.runtime import layers as torch_layers
from switchc.backends.torch.runtime import moe as torch_moe

from switchc.analysis.memory import ACTIVATION_RULES, MASK_BYTES
from switchc.ir import build_graph
from switchc.ir import ops as irops
from switchc.ir.tensor import DTYPE_BYTES as IR_DTYPE_BYTES
from tests.ir.tiny import tiny

SIZES = {"length": 16, "kv_length": 24, "embed": 16, "heads": 2, "kv": 8, "mlp": 32, "experts": 4, "capacity": 6}
BATCHES = (2, 4)  # the batch (for experts: routing groups)
DTYPE_BYTES = {"f32": 4, "bf16": 2, "bool": 1, "i32": 4, "u32": 4}
JAX_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _op(node: str, *overrides: str) -> irops.Op:
    op = build_graph(tiny(*overrides)).nodes[node]["op"]
    assert isinstance(op, irops.Op)
    return op


def _rule_bytes(op: irops.Op, batch: int) -> tuple[int, int]:
    """(what the program should keep at `batch` beyond its arguments, of which dropout masks)."""
    sizes = {**SIZES, "batch": batch, "groups": batch}
    if isinstance(op, irops.Attention) and not op.cross:
        sizes["kv_length"] = sizes["length"]
    saved = ACTIVATION_RULES[type(op)](op, sizes.__getitem__)
    if isinstance(op, irops.Attention):
        masked = batch * sizes["heads"] * sizes["length"] * sizes["kv_length"]
    elif isinstance(op, irops.DenseFFN):
        masked = batch * sizes["length"] * sizes["mlp"]
    else:
        masked = batch * sizes["experts"] * sizes["capacity"] * sizes["mlp"]
    rate = getattr(op, "dropout_rate", 0.0)
    internal = saved.internal
    if isinstance(op, irops.ExpertFFN):  # the slots, as their expert-major copy
        assert saved.inputs == (0,)
        internal += batch * sizes["experts"] * sizes["capacity"] * sizes["embed"] * IR_DTYPE_BYTES[op.dtype]
    return internal, masked * MASK_BYTES if rate > 0 else 0


def _jax_residual_bytes(function: Callable[..., Any], *args: Any) -> int:
    """Bytes of the residuals autodiff keeps, but the function's arguments and literals."""
    listing = io.StringIO()
    with contextlib.redirect_stdout(listing):
        print_saved_residuals(function, *args)
    total = 0
    for line in listing.getvalue().splitlines():
        if "from the argument" in line or "from a literal" in line:
            continue
        match = re.match(r"(\w+)\[([\d,]*)\]", line)
        assert match, line
        total += DTYPE_BYTES[match[1]] * math.prod(int(d) for d in match[2].split(",") if d)
    return total


def _torch_saved_bytes(function: Callable[[], torch.Tensor], leaves: list[torch.Tensor]) -> int:
    """Bytes of the storages autograd saves while `function` runs, each once, but the leaves'."""
    own = {t.untyped_storage().data_ptr() for t in leaves}
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        function()
    return sum(kept.values())


def _jax_kept(op: irops.Op, batch: int) -> int:
    dtype, key = JAX_DTYPES[op.dtype], jax.random.key(0)
    rate = getattr(op, "dropout_rate", 0.0)
    L, M, D, H, K, F = (SIZES[n] for n in ("length", "kv_length", "embed", "heads", "kv", "mlp"))
    if isinstance(op, irops.Attention):
        params = {n: jnp.ones((D, H, K), dtype) for n in "qkv"} | {"o": jnp.ones((H, K, D), dtype)}
        x = jnp.ones((batch, L, D), dtype)
        if op.cross:
            memory, mask = jnp.ones((batch, M, D), dtype), jnp.ones((batch, 1, 1, M), bool)
            return _jax_residual_bytes(
                lambda p, x, m: jnp.sum(jax_layers.attention(p, x, m, None, mask, rate, key).astype(jnp.float32)),
                params,
                x,
                memory,
            )
        bias, mask = jnp.zeros((H, L, L), jnp.float32), jnp.ones((batch, 1, 1, L), bool)
        return _jax_residual_bytes(
            lambda p, x: jnp.sum(jax_layers.attention(p, x, x, bias, mask, rate, key).astype(jnp.float32)), params, x
        )
    activation = op.activation  # type: ignore[attr-defined]
    ins = ("wi_0", "wi_1") if activation in irops.GATED else ("wi",)
    if isinstance(op, irops.DenseFFN):
        params = {n: jnp.ones((D, F), dtype) for n in ins} | {"wo": jnp.ones((F, D), dtype)}
        x = jnp.ones((batch, L, D), dtype)
        return _jax_residual_bytes(
            lambda p, x: jnp.sum(jax_layers.dense_ffn(p, x, activation, rate, key).astype(jnp.float32)), params, x
        )
    E, C = SIZES["experts"], SIZES["capacity"]
    params = {n: jnp.ones((E, D, F), dtype) for n in ins} | {"wo": jnp.ones((E, F, D), dtype)}
    slots = jnp.ones((batch, E, C, D), dtype)
    return _jax_residual_bytes(
        lambda p, s: jnp.sum(jax_moe.expert_ffn(p, s, activation, dropout_rate=rate, rng=key).astype(jnp.float32)),
        params,
        slots,
    )


def _torch_kept(op: irops.Op, batch: int) -> int:
    dtype = TORCH_DTYPES[op.dtype]
    rate = getattr(op, "dropout_rate", 0.0)
    noise = {"dropout_rate": rate, "rng": torch_layers.Stream((0,))} if rate else {}
    L, M, D, H, K, F = (SIZES[n] for n in ("length", "kv_length", "embed", "heads", "kv", "mlp"))
    module: torch.nn.Module
    if isinstance(op, irops.Attention):
        module = torch_layers.Attention(D, H, K)
        x = torch.ones(batch, L, D, dtype=dtype, requires_grad=True)
        if op.cross:
            memory = torch.ones(batch, M, D, dtype=dtype, requires_grad=True)
            mask = torch.ones(batch, 1, 1, M, dtype=torch.bool)
            inputs, call = [x, memory], lambda: module(x, memory, None, mask, **noise)
        else:
            bias, mask = torch.zeros(1, H, L, L), torch.ones(batch, 1, 1, L, dtype=torch.bool)
            inputs, call = [x], lambda: module(x, x, bias, mask, **noise)
    elif isinstance(op, irops.DenseFFN):
        module = torch_layers.FeedForward(D, F, op.activation)
        x = torch.ones(batch, L, D, dtype=dtype, requires_grad=True)
        inputs, call = [x], lambda: module(x, **noise)
    else:
        assert isinstance(op, irops.ExpertFFN)
        module = torch_moe.Experts(SIZES["experts"], D, F, op.activation)
        slots = torch.ones(batch, SIZES["experts"], SIZES["capacity"], D, dtype=dtype, requires_grad=True)
        inputs, call = [slots], lambda: module(slots, **noise)
    module = module.to(dtype)
    for parameter in module.parameters():
        torch.nn.init.normal_(parameter)
    return _torch_saved_bytes(call, [*inputs, *module.parameters()])


CASES: Mapping[str, tuple[str, ...]] = {
    "self-attention": ("encoder/0/attention",),
    "self-attention, dropout": ("encoder/0/attention", "model.dropout_rate=0.1"),
    "self-attention, bfloat16": ("encoder/0/attention", "model.dtype=bfloat16"),
    "self-attention, bfloat16, dropout": ("encoder/0/attention", "model.dtype=bfloat16", "model.dropout_rate=0.1"),
    "cross-attention": ("decoder/0/cross_attention",),
    "cross-attention, bfloat16": ("decoder/0/cross_attention", "model.dtype=bfloat16"),
    **{
        f"ffn {activation}{', dropout' if rate else ''}": (
            "encoder/0/ffn",
            f"model.ffn_activation={activation}",
            f"model.dropout_rate={rate}",
        )
        for activation in ("relu", "gelu", "geglu", "swiglu")
        for rate in (0.0, 0.1)
    },
    **{
        f"experts {activation}{', dropout' if rate else ''}": (
            "encoder/1/experts",
            f"model.ffn_activation={activation}",
            f"moe.expert_dropout_rate={rate}",
        )
        for activation in ("relu", "geglu")
        for rate in (0.0, 0.1)
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_jax_program_keeps_what_the_rule_counts(case: str) -> None:
    node, *overrides = CASES[case]
    op = _op(node, *overrides)
    for batch in BATCHES:
        assert _jax_kept(op, batch) == _rule_bytes(op, batch)[0], batch


@pytest.mark.parametrize("case", list(CASES))
def test_the_torch_program_keeps_what_the_rule_counts_but_dropout_masks(case: str) -> None:
    node, *overrides = CASES[case]
    op = _op(node, *overrides)
    for batch in BATCHES:
        rule, masks = _rule_bytes(op, batch)
        assert _torch_kept(op, batch) == rule - masks, batch
