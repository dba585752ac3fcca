"""Optimizers and learning-rate schedules (the Switch Transformer paper trains as T5 does), matching
the JAX program's optax ones.

Runtime support, copied verbatim. The JAX program uses optax.adamw and optax.adafactor (with
multiply_by_parameter_scale=False, as T5X does); torch has AdamW with the same arithmetic, but
no Adafactor with optax's conventions, so `Adafactor` below follows optax.adafactor step by step:
factored second moments over the two largest dims (when the smaller is >= 128), an update
clipped to block RMS 1, scaled by the learning rate, optional momentum, weight decay added after
the learning rate, then subtracted.

Parameters may be shards (parallel.py): the statistics optax takes over a whole parameter (means
over a dim, the update's RMS) are then all-reduced over the mesh axes that split that dim, so
the update is the one the whole parameter would get.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist

from .layers import module_path
from .parallel import Mesh

Schedule = Callable[[int], float]


def schedule(kind: str, peak: float, warmup_steps: int, total_steps: int) -> Schedule:
    """rsqrt (T5), constant, or cosine (linear warm-up, then cosine decay to zero); step counts from 0."""
    if kind == "constant":
        return lambda step: peak
    if kind == "rsqrt":
        warmup = max(warmup_steps, 1)
        return lambda step: peak * math.sqrt(warmup / max(step + 1, warmup))
    if kind == "cosine":  # optax.warmup_cosine_decay_schedule(0, peak, warmup, decay_steps); no warm-up: the peak first
        warmup = warmup_steps
        decay_steps = max(total_steps, warmup_steps + 1) - warmup

        def cosine(step: int) -> float:
            if step < warmup:
                return peak * step / warmup
            done = min(step - warmup, decay_steps)
            return peak * 0.5 * (1.0 + math.cos(math.pi * done / decay_steps))

        return cosine
    raise ValueError(f"unknown schedule {kind!r}")


Placement = Sequence[tuple[str, ...]]  # per dim of a parameter, the mesh axes splitting it


class Adafactor(torch.optim.Optimizer):
    """optax.adafactor(lr, decay_rate, multiply_by_parameter_scale=False, momentum, weight_decay_rate).

    `placements` gives, for each parameter that is a shard, the mesh axes splitting each of its
    dims; `mesh` reduces over them. Set the learning rate of each step in param_groups[...]["lr"].
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        *,
        lr: float,
        decay_rate: float = 0.8,
        momentum: float | None = None,
        weight_decay: float = 0.0,
        clipping_threshold: float = 1.0,
        min_dim_size_to_factor: int = 128,
        eps: float = 1e-30,
        mesh: Mesh | None = None,
        placements: Mapping[torch.nn.Parameter, Placement] | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "decay_rate": decay_rate,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "clipping_threshold": clipping_threshold,
            "min_dim_size_to_factor": min_dim_size_to_factor,
            "eps": eps,
        }
        super().__init__(params, defaults)
        self.mesh = mesh
        self.placements = dict(placements or {})

    def _placement(self, param: torch.Tensor) -> Placement:
        return self.placements.get(param, ((),) * param.dim())  # type: ignore[call-overload]

    def _sum(self, value: torch.Tensor, axes: Iterable[str]) -> torch.Tensor:
        """Sum over the shards along `axes` (the identity for a whole parameter)."""
        group = self.mesh.group(axes) if self.mesh is not None else None
        if group is not None:
            dist.all_reduce(value, group=group)
        return value

    def _mean(self, value: torch.Tensor, dim: int, axes: tuple[str, ...], size: int, *, keepdim: bool) -> torch.Tensor:
        """The mean over dim `dim` of the whole parameter, whose size there is `size`."""
        return self._sum(value.sum(dim=dim, keepdim=keepdim), axes) / size

    @staticmethod
    def factored_dims(shape: Sequence[int], min_dim_size_to_factor: int) -> tuple[int, int] | None:
        """optax's choice: the second-largest and the largest dim, if the former is large enough."""
        if len(shape) < 2:
            return None
        order = sorted(range(len(shape)), key=lambda d: shape[d])  # stable, like numpy's argsort here
        if shape[order[-2]] < min_dim_size_to_factor:
            return None
        return order[-2], order[-1]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:  # type: ignore[override]
        assert closure is None, "Adafactor takes no closure"
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)

    def _update(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        grad = param.grad
        assert grad is not None
        placement = self._placement(param)
        shape = [
            size * (self.mesh.size(axes) if self.mesh is not None else 1)
            for size, axes in zip(param.shape, placement, strict=True)
        ]
        state = self.state[param]
        factored = self.factored_dims(shape, group["min_dim_size_to_factor"])
        if not state:
            state["step"] = 0
            if factored is not None:
                d1, d0 = factored
                state["v_row"] = torch.zeros_like(param.sum(dim=d0))
                state["v_col"] = torch.zeros_like(param.sum(dim=d1))
            else:
                state["v"] = torch.zeros_like(param)
            if group["momentum"] is not None:
                state["momentum"] = torch.zeros_like(param, dtype=torch.float32)
        t = state["step"] + 1
        decay = 1.0 - t ** (-group["decay_rate"])
        grad_sqr = grad.square() + group["eps"]
        if factored is not None:
            d1, d0 = factored
            row_mean = self._mean(grad_sqr, d0, placement[d0], shape[d0], keepdim=False)
            col_mean = self._mean(grad_sqr, d1, placement[d1], shape[d1], keepdim=False)
            v_row = state["v_row"].mul_(decay).add_((1.0 - decay) * row_mean)
            v_col = state["v_col"].mul_(decay).add_((1.0 - decay) * col_mean)
            reduced_d1 = d1 - 1 if d1 > d0 else d1
            row_col_mean = self._mean(v_row, reduced_d1, placement[d1], shape[d1], keepdim=True)
            row_factor = (v_row / row_col_mean).rsqrt()
            col_factor = v_col.rsqrt()
            update = grad * row_factor.unsqueeze(d0) * col_factor.unsqueeze(d1)
        else:
            v = state["v"].mul_(decay).add_((1.0 - decay) * grad_sqr)
            update = grad * v.rsqrt()
        # clip_by_block_rms: the RMS of the whole parameter's update
        square_sum = self._sum(update.square().sum(), [axis for axes in placement for axis in axes])
        rms = torch.sqrt(square_sum / math.prod(shape))
        update = update / torch.clamp(rms / group["clipping_threshold"], min=1.0)
        update = update * group["lr"]
        if group["momentum"] is not None:
            momentum = state["momentum"].mul_(group["momentum"]).add_((1.0 - group["momentum"]) * update)
            update = momentum.to(param.dtype)
        if group["weight_decay"]:
            update = update + group["weight_decay"] * param
        param.sub_(update)
        state["step"] = t


def optimizer(
    name: str,
    params: Sequence[torch.nn.Parameter],
    *,
    beta1: float | None,
    beta2: float | None,
    weight_decay: float,
    mesh: Mesh | None = None,
    placements: Mapping[torch.nn.Parameter, Placement] | None = None,
) -> torch.optim.Optimizer:
    """adafactor (factored second moments, T5's choice) or adam, configured as the JAX program's.

    A beta of None takes the optimizer's own default (Adafactor: no momentum, decay 0.8; Adam:
    0.9 and 0.999). The learning rate is set by the caller before every step (param_groups).
    """
    if name == "adafactor":
        return Adafactor(
            params,
            lr=0.0,
            decay_rate=0.8 if beta2 is None else beta2,
            momentum=beta1,
            weight_decay=weight_decay,
            mesh=mesh,
            placements=placements,
        )
    if name == "adam":  # optax.adamw: eps 1e-8 outside the square root, decay scaled by the learning rate
        b1 = 0.9 if beta1 is None else beta1
        b2 = 0.999 if beta2 is None else beta2
        # fused: one pass over each parameter's p, g, m and v (CPU and CUDA), where the default
        # for-loop implementation makes a pass per elementwise op: 22% of a CPU step at 16 experts.
        return torch.optim.AdamW(params, lr=0.0, betas=(b1, b2), eps=1e-8, weight_decay=weight_decay, fused=True)
    raise ValueError(f"unknown optimizer {name!r}")


def clip_by_global_norm(params: Iterable[torch.nn.Parameter], norm: torch.Tensor, max_norm: float) -> None:
    """optax.clip_by_global_norm: scale every gradient by max_norm / norm when norm exceeds max_norm."""
    if max_norm <= 0 or float(norm) < max_norm:
        return
    scale = max_norm / float(norm)
    for param in params:
        if param.grad is not None:
            param.grad.mul_(scale)


def optimizer_for(
    config: Any, model: torch.nn.Module, placements: Mapping[str, Placement], mesh: Mesh
) -> torch.optim.Optimizer:
    """The optimizer model.CONFIG names, over every parameter of `model` once parallel.parallelize
    has split it (`placements`: IR name -> the mesh axes splitting each dim, Parallel.placements)."""
    by_param = {model.get_parameter(module_path(name)): placement for name, placement in placements.items()}
    return optimizer(
        config.optimizer,
        list(model.parameters()),
        beta1=config.beta1,
        beta2=config.beta2,
        weight_decay=config.weight_decay,
        mesh=mesh,
        placements=by_param,
    )
