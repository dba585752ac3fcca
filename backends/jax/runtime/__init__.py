"""Runtime support copied verbatim into generated JAX programs; depends only on jax (and optax)."""
