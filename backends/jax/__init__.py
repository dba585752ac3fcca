"""The JAX backend: jit + NamedSharding over a Mesh from the spec, shard_map all-to-all for experts."""

from .. import Target

TARGET = Target(
    name="jax",
    requires=("jax", "optax", "numpy"),
    extra="jax",
    launch="python {program}",
)
