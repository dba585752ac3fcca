"""Expert parallelism: Switch layers under shard_map on the program's mesh. Runtime support.

Everything else in a generated model is sharded by jit from NamedSharding annotations (pjit
semantics). Switch layers are the exception: every device routes its own tokens and the experts'
slots must travel to the devices that hold each expert. The model calls
`experts.switch(...)` without knowing the mesh; this module wraps `moe.switch_ffn` in
`jax.shard_map` with tokens split over the batch axes, experts over the expert axes and d_ff over
the model axes, so its body runs the two all-to-alls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from . import routing
from .moe import switch_ffn
from .sharding import Rules

METRICS = ("aux_loss", "z_loss", "dropped_fraction", "tokens_per_expert", "top1_gate")


def _axes(axes: tuple[str, ...]) -> str | tuple[str, ...] | None:
    if not axes:
        return None
    return axes[0] if len(axes) == 1 else axes


@dataclass(frozen=True)
class ExpertParallel:
    """How Switch layers run on `mesh`; with no mesh (or one device) they run locally."""

    mesh: Mesh | None
    rules: Rules

    def switch(
        self,
        params: dict[str, Any],
        x: jax.Array,
        settings: routing.MoESettings,
        *,
        jitter: jax.Array | None = None,
        rng: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """A Switch layer on x [B, L, D]; params: router [D, E], wi / wi_0 / wi_1 [E, D, F], wo [E, F, D]."""
        if self.mesh is None or self.mesh.size == 1:
            return switch_ffn(params, x, settings, jitter=jitter, rng=rng)
        batch_axes = self.rules.axes("batch")
        expert_axes = self.rules.axes("experts")
        mlp_axes = self.rules.axes("mlp")
        tokens = P(_axes(batch_axes))
        experts, mlp = _axes(expert_axes), _axes(mlp_axes)
        param_specs = {
            name: P() if name == "router" else P(experts, mlp, None) if name == "wo" else P(experts, None, mlp)
            for name in params
        }
        # shard_map takes arrays only: jitter and rng join the arguments when present.
        extras = {name: value for name, value in (("jitter", jitter), ("rng", rng)) if value is not None}
        extra_specs = {name: tokens if name == "jitter" else P() for name in extras}

        def body(params: dict[str, Any], x: jax.Array, extras: dict[str, jax.Array]) -> Any:
            return switch_ffn(
                params,
                x,
                settings,
                jitter=extras.get("jitter"),
                rng=extras.get("rng"),
                batch_axes=batch_axes,
                expert_axes=expert_axes,
                mlp_axes=mlp_axes,
            )

        local = jax.shard_map(
            body,
            mesh=self.mesh,
            in_specs=(param_specs, tokens, extra_specs),
            out_specs=(tokens, {name: P() for name in METRICS}),
        )
        return local(params, x, extras)
