"""Routing groups and expert capacity: the one definition that switchc's cost model and every
generated program share (the Switch Transformer paper's Sec. 2.2, eq. 3, with the floor of the reference code):

    tokens per group = the largest divisor of the tokens on one device that is <= group_size
    capacity         = min(tokens per group,
                           max(min_capacity, ceil(top_k * tokens per group / num_experts * factor)))

Groups are made from one device's tokens (each device routes its own tokens, Sec. 6), so a device
holding fewer tokens than group_size routes them as one group. A divisor keeps every group the
same size with no padding tokens. top_k scales the capacity because each token claims k slots
(GShard); capacity never exceeds the group, since a group cannot fill more slots than it has
tokens (per choice).

This file is runtime support: it is copied verbatim into every generated program (JAX and
PyTorch) as runtime/routing.py, where runtime/moe.py imports it, and it is pure Python with no
dependency at all, so switchc itself imports it too (switchc.ir.routing, for the shapes the cost
model counts): the report and the programs cannot disagree on a group size or a capacity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def routing_group_size(tokens: int, group_size: int) -> int:
    """Tokens per routing group: the largest divisor of `tokens` that is at most `group_size`."""
    if tokens < 1 or group_size < 1:
        raise ValueError(f"tokens ({tokens}) and group_size ({group_size}) must be positive")
    size = min(tokens, group_size)
    while tokens % size:
        size -= 1
    return size


def expert_capacity(group_tokens: int, num_experts: int, top_k: int, capacity_factor: float, min_capacity: int) -> int:
    """Slots per expert and group: ceil(k * S / E * factor) (eq. 3), at least `min_capacity`, at most S."""
    wanted = top_k * group_tokens / num_experts * capacity_factor
    if wanted >= group_tokens:  # also a factor so large that the product is infinite
        return group_tokens
    return min(max(math.ceil(wanted), min_capacity), group_tokens)


@dataclass(frozen=True)
class MoESettings:
    """What the generated program fixes about one Switch layer (model.py's SWITCH and SWITCH_EVAL)."""

    num_experts: int
    top_k: int
    capacity_factor: float  # the train or eval factor, chosen by the caller
    min_capacity: int
    group_size: int  # most tokens per routing group
    jitter_eps: float
    router_dtype: Any  # the framework's dtype: jnp.float32, torch.float32, ...
    batch_prioritized: bool
    expert_dropout_rate: float
    activation: str  # relu | gelu | geglu | swiglu

    def groups(self, tokens: int) -> tuple[int, int]:
        """(tokens per routing group, expert capacity) for a device that routes `tokens` tokens."""
        group = routing_group_size(tokens, self.group_size)
        capacity = expert_capacity(group, self.num_experts, self.top_k, self.capacity_factor, self.min_capacity)
        return group, capacity
