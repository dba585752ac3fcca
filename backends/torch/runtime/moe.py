"""The Switch / MoE feed-forward layer: routing, capacity, dispatch, experts, combine (the Switch
Transformer paper's Sec. 2).

Runtime support, copied verbatim into every generated PyTorch program; it depends only on torch
and runtime/routing.py (routing group size, expert capacity and MoESettings: pure Python shared
with the JAX program and switchc's cost model). One function (or module) per IR op of a Switch
layer (Router, Dispatch, ExpertFFN, Combine, AuxLoss, RouterZLoss), the same functions as the JAX
program's runtime/moe.py, and `switch` composes them on the tokens this process holds. The layer
knows nothing about parallelism: parallel.py wraps the `Experts` module so that an all-to-all
carries each expert's slots to the rank that holds the expert before it runs, and a second one
brings the results back (the paper's Sec. 5).

Shapes: G groups of S tokens (S = routing group size), D = d_model, F = d_ff (or d_ff / model
shards), E experts (E_local on one rank), C = expert capacity, k = experts per token.

Dispatch is index-based: each expert slot gathers the token that claimed it, and each token
gathers its slots' outputs back: O(G * E * C * D) data movement and no matmul, where the one-hot
einsum of Mesh-TF costs 2 * G * S * E * C * D FLOPs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import routing
from .layers import Stream, activate, dropout


class Route(NamedTuple):
    """Routing decisions of one Switch layer."""

    experts: torch.Tensor  # [G, S, k] int64: chosen experts, best first
    gates: torch.Tensor  # [G, S, k] router dtype: their probabilities
    slot: torch.Tensor  # [G, S, k] int64: expert * C + position, or E * C when dropped
    kept: torch.Tensor  # [G, S, k] bool: False where the expert was full (the token is dropped)


def _slot_positions(experts: torch.Tensor, gates: torch.Tensor, num_experts: int, prioritized: bool) -> torch.Tensor:
    """Position of each (token, choice) in its expert's queue: [G, S, k].

    First choices queue before second choices (GShard); within a choice, tokens queue in
    sequence order, or by router probability when batch-prioritized.
    """
    groups, tokens, top_k = experts.shape
    if prioritized:
        order = torch.argsort(-gates[..., 0], dim=-1, stable=True)  # [G, S] most confident first
    else:
        order = torch.arange(tokens, device=experts.device).expand(groups, tokens)
    inverse = torch.argsort(order, dim=-1)
    positions = []
    claimed = torch.zeros(groups, num_experts, dtype=torch.long, device=experts.device)  # taken by earlier choices
    for choice in range(top_k):
        chosen = experts[..., choice].gather(-1, order)  # [G, S] in queue order
        one_hot = F.one_hot(chosen, num_experts)  # [G, S, E]
        queue = one_hot.cumsum(dim=1) - 1 + claimed[:, None, :]
        position = (queue * one_hot).sum(dim=-1)  # [G, S] in queue order
        positions.append(position.gather(-1, inverse))
        claimed = claimed + one_hot.sum(dim=1)
    return torch.stack(positions, dim=-1)


class Router(nn.Module):
    """Router op: `w` [D, E]; [G, S, D] -> [G, S, E] logits in the router's precision (float32: Table 2)."""

    def __init__(self, d_model: int, num_experts: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.empty(d_model, num_experts))

    def forward(self, x: torch.Tensor, router_dtype: torch.dtype, jitter: torch.Tensor | None = None) -> torch.Tensor:
        """jitter: multiplicative input noise shaped like x (App. C), None at evaluation."""
        x = x.to(router_dtype)
        if jitter is not None:
            x = x * jitter.to(router_dtype)
        return x @ self.w.to(router_dtype)


def route(logits: torch.Tensor, top_k: int, capacity: int, batch_prioritized: bool) -> Route:
    """Top-k experts per token and each (token, choice)'s slot; beyond capacity it is dropped."""
    num_experts = logits.shape[-1]
    probs = torch.softmax(logits, dim=-1)
    gates, experts = torch.topk(probs, top_k, dim=-1)
    positions = _slot_positions(experts, gates, num_experts, batch_prioritized)
    kept = positions < capacity
    slot = torch.where(kept, experts * capacity + positions, num_experts * capacity)
    return Route(experts, gates, slot, kept)


def dispatch(x: torch.Tensor, routed: Route, num_experts: int, capacity: int) -> torch.Tensor:
    """Dispatch op: [G, S, D] -> [G, E, C, D]; each slot gathers the token that claimed it."""
    groups, group, d_model = x.shape
    slots = num_experts * capacity
    top_k = routed.slot.shape[-1]
    token = torch.arange(group, device=x.device)[None, :, None].expand(groups, group, top_k)
    # `group` indexes a zero pad row; the extra last slot collects every dropped (token, choice)
    source = torch.full((groups, slots + 1), group, dtype=torch.long, device=x.device)
    source = source.scatter(1, routed.slot.reshape(groups, -1), token.reshape(groups, -1))[:, :slots]
    padded = torch.cat([x, x.new_zeros(groups, 1, d_model)], dim=1)
    gathered = padded.gather(1, source[..., None].expand(groups, slots, d_model))
    return gathered.reshape(groups, num_experts, capacity, d_model)


class Experts(nn.Module):
    """ExpertFFN op: every expert's FFN on its slots, [G, E, C, D] -> [G, E, C, D].

    Parameters wi (or wi_0, wi_1) [E, D, F] and wo [E, F, D]; the number of experts is read from
    wo, so after parallel.py keeps a rank's experts (and their all-to-all has brought every rank's
    slots for them: [G * n, E / n, C, D]) the module runs those only.
    """

    def __init__(self, num_experts: int, d_model: int, d_ff: int, activation: str) -> None:
        super().__init__()
        self.activation = activation
        if activation in ("geglu", "swiglu"):
            self.wi_0 = nn.Parameter(torch.empty(num_experts, d_model, d_ff))
            self.wi_1 = nn.Parameter(torch.empty(num_experts, d_model, d_ff))
        else:
            self.wi = nn.Parameter(torch.empty(num_experts, d_model, d_ff))
        self.wo = nn.Parameter(torch.empty(num_experts, d_ff, d_model))

    def forward(self, slots: torch.Tensor, *, dropout_rate: float = 0.0, rng: Stream | None = None) -> torch.Tensor:
        groups, experts, capacity, d_model = slots.shape
        # Expert-major [E, G * C, D]: one matmul per expert over all its slots.
        x = slots.transpose(0, 1).reshape(experts, groups * capacity, d_model)
        if hasattr(self, "wi"):
            hidden = activate(torch.bmm(x, self.wi), None, self.activation)
        else:
            hidden = activate(torch.bmm(x, self.wi_0), torch.bmm(x, self.wi_1), self.activation)
        hidden = dropout(hidden, dropout_rate, rng)  # expert dropout (Table 4), training only
        out = torch.bmm(hidden, self.wo)
        return out.reshape(experts, groups, capacity, d_model).transpose(0, 1)


def combine(slots: torch.Tensor, routed: Route, dtype: torch.dtype) -> torch.Tensor:
    """Combine op: [G, E, C, D] -> [G, S, D]; each token sums its slots' outputs times its gates.

    Gates are cast to the model dtype first, so no float32 tensor is multiplied into activations.
    """
    groups, num_experts, capacity, d_model = slots.shape
    group, top_k = routed.slot.shape[1:]
    flat = slots.reshape(groups, num_experts * capacity, d_model)
    flat = torch.cat([flat, flat.new_zeros(groups, 1, d_model)], dim=1)  # dropped -> 0
    index = routed.slot.reshape(groups, group * top_k, 1).expand(groups, group * top_k, d_model)
    picked = flat.gather(1, index).reshape(groups, group, top_k, d_model)
    weights = torch.where(routed.kept, routed.gates, 0.0).to(dtype)
    return torch.einsum("gskd,gsk->gsd", picked, weights)


def load_balancing_loss(logits: torch.Tensor, routed: Route) -> torch.Tensor:
    """AuxLoss op (eq. 4-6): N * sum_i f_i * P_i per group, averaged; 1.0 at uniform routing."""
    num_experts = logits.shape[-1]
    probs = torch.softmax(logits.float(), dim=-1)
    fraction = F.one_hot(routed.experts[..., 0], num_experts).float().mean(dim=1)
    return num_experts * (fraction * probs.mean(dim=1)).sum(dim=-1).mean()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """RouterZLoss op (ST-MoE): mean squared log-partition of the router logits."""
    return torch.logsumexp(logits.float(), dim=-1).square().mean()


def routing_metrics(routed: Route, num_experts: int) -> dict[str, torch.Tensor]:
    """Share of (token, choice) pairs dropped, tokens whose first choice is each expert, top-1 gate."""
    return {
        "dropped_fraction": 1.0 - routed.kept.float().mean(),
        "tokens_per_expert": F.one_hot(routed.experts[..., 0], num_experts).sum(dim=(0, 1)),
        "top1_gate": routed.gates[..., 0].float().mean(),
    }


def switch(
    router: Router,
    experts: Experts,
    x: torch.Tensor,
    settings: routing.MoESettings,
    *,
    jitter: torch.Tensor | None = None,
    rng: Stream | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A whole Switch layer on this process's tokens: x [B, L, D] -> ([B, L, D], losses and metrics).

    Routing groups are made from the tokens this process holds, as on each device of the JAX
    program; losses and metrics are this shard's (the training loop averages them over shards).
    """
    batch, length, d_model = x.shape
    group, capacity = settings.groups(batch * length)
    grouped = x.reshape(-1, group, d_model)
    if jitter is not None:
        jitter = jitter.reshape(grouped.shape)
    logits = router(grouped, settings.router_dtype, jitter)
    routed = route(logits, settings.top_k, capacity, settings.batch_prioritized)
    # The router losses before the experts: under train.remat the backward's recomputation of the
    # block then ends at the combine's inputs, as XLA's does (layers.remat).
    metrics = {
        "aux_loss": load_balancing_loss(logits, routed),
        "z_loss": router_z_loss(logits),
        **routing_metrics(routed, settings.num_experts),
    }
    slots = dispatch(grouped, routed, settings.num_experts, capacity)
    slots = experts(slots, dropout_rate=settings.expert_dropout_rate, rng=rng)
    y = combine(slots, routed, x.dtype).reshape(batch, length, d_model)
    return y, metrics
