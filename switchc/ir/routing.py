"""Routing groups and expert capacity of each Switch layer, for the graph and the cost model.

The rule itself (largest divisor of a device's tokens within moe.group_size; eq. 3 capacity with
its floor and ceiling) has one definition: backends/common/routing.py, pure Python, which every
generated program carries as runtime/routing.py and which switchc imports here. The cost model
and the generated JAX and PyTorch programs therefore agree on every shape by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchc.backends.common.routing import expert_capacity
from switchc.backends.common.routing import routing_group_size as tokens_per_group

__all__ = ["Routing", "expert_capacity", "routing", "tokens_per_group"]


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
