"""Routing groups and expert capacity: the one definition the cost model and the backends share.

The rule (PAPER.md Sec. 2.2, eq. 3, with the floor of the reference code):

    tokens_per_group = the largest divisor of the tokens on one device that is <= moe.group_size
    capacity         = min(tokens_per_group,
                           max(min_capacity, ceil(top_k * tokens_per_group / num_experts * factor)))

Groups are made from one device's tokens (each device routes its own tokens, Sec. 6), so a device
holding fewer tokens than group_size routes them as one group. A divisor keeps every group the
same size with no padding tokens. top_k scales the capacity because each token claims k slots
(GShard); capacity never exceeds the group, since a group cannot fill more slots than it has
tokens (per choice). The float arithmetic is exactly that of the generated JAX program
(backends/jax/runtime/moe.py, which cannot import switchc), so both agree on every shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def tokens_per_group(tokens_on_device: int, group_size: int) -> int:
    """Tokens in one routing group: the largest divisor of `tokens_on_device` that is <= group_size."""
    if tokens_on_device < 1 or group_size < 1:
        raise ValueError(f"tokens_on_device ({tokens_on_device}) and group_size ({group_size}) must be positive")
    size = min(tokens_on_device, group_size)
    while tokens_on_device % size:
        size -= 1
    return size


def expert_capacity(group_tokens: int, num_experts: int, top_k: int, capacity_factor: float, min_capacity: int) -> int:
    """Slots per expert in one group: ceil(k * S / E * factor) (eq. 3), at least min_capacity, at most S."""
    capacity = max(math.ceil(top_k * group_tokens / num_experts * capacity_factor), min_capacity)
    return min(capacity, group_tokens)


@dataclass(frozen=True)
class Routing:
    """How one Switch layer's tokens are grouped and slotted on each device."""

    tokens_on_device: int
    tokens_per_group: int
    groups_per_device: int
    capacity: int

    @property
    def slots_per_device(self) -> int:
        """Expert slots one device's groups fill (times num_experts: every expert has `capacity`)."""
        return self.groups_per_device * self.capacity


def routing(
    tokens_on_device: int, group_size: int, num_experts: int, top_k: int, capacity_factor: float, min_capacity: int
) -> Routing:
    """Groups and capacity for a Switch layer that sees `tokens_on_device` tokens per device."""
    group = tokens_per_group(tokens_on_device, group_size)
    capacity = expert_capacity(group, num_experts, top_k, capacity_factor, min_capacity)
    return Routing(tokens_on_device, group, tokens_on_device // group, capacity)
