"""Optimizers and learning-rate schedules, on optax (the Switch Transformer paper trains as T5 does).
Runtime support.

The T5 recipe is Adafactor with an inverse-square-root schedule, lr(step) = 1/sqrt(max(step, w)):
constant for w warm-up steps, then decaying. `peak` rescales it so its maximum is the spec's
learning rate.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def schedule(kind: str, peak: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """rsqrt (T5), constant, or cosine (linear warm-up, then cosine decay to zero)."""
    if kind == "constant":
        return optax.constant_schedule(peak)
    if kind == "rsqrt":
        warmup = max(warmup_steps, 1)

        def rsqrt(step: jnp.ndarray) -> jnp.ndarray:
            return peak * jnp.sqrt(warmup / jnp.maximum(step + 1, warmup))

        return rsqrt
    if kind == "cosine":
        if warmup_steps == 0:  # no warm-up: the peak at step 0 (optax's warm-up of 1 step would start at 0)
            return optax.cosine_decay_schedule(peak, max(total_steps, 1))
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, max(total_steps, warmup_steps + 1))
    raise ValueError(f"unknown schedule {kind!r}")


def optimizer(
    name: str,
    learning_rate: optax.Schedule,
    *,
    beta1: float | None,
    beta2: float | None,
    weight_decay: float,
) -> optax.GradientTransformation:
    """adafactor (factored second moments, T5's choice) or adam.

    A beta of None takes the optimizer's own default (Adafactor: no momentum, decay 0.8; Adam:
    0.9 and 0.999). Clipping is not part of it (clip_by_global_norm): its state would be the same
    whether it is on or off, but its place in an optax chain would not, and a run resumed with
    clipping turned on or off (--allow-changes) restores the state as it was saved.
    """
    if name == "adafactor":
        return optax.adafactor(
            learning_rate,
            decay_rate=0.8 if beta2 is None else beta2,
            multiply_by_parameter_scale=False,  # the schedule sets the step size, as in T5X
            momentum=beta1,
            weight_decay_rate=weight_decay or None,
        )
    if name == "adam":
        b1 = 0.9 if beta1 is None else beta1
        b2 = 0.999 if beta2 is None else beta2
        return optax.adamw(learning_rate, b1=b1, b2=b2, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def clip_by_global_norm(grads: Any, norm: jax.Array, max_norm: float) -> Any:
    """optax.clip_by_global_norm's update, given the gradients' global norm (the train step has it):
    every gradient scaled by max_norm / norm when norm exceeds max_norm; max_norm 0 clips nothing."""
    if max_norm <= 0:
        return grads
    return jax.tree.map(lambda g: jnp.where(norm < max_norm, g, (g / norm.astype(g.dtype)) * max_norm), grads)
