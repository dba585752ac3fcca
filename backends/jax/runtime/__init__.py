"""The JAX program's runtime as switchc keeps it. A program gets a copy of these modules in
its runtime/ (RUNTIME_MODULES of backends/jax/program.py; its runtime/__init__.py is written
with it, not copied from this file) beside copies of backends/common's COMMON_MODULES, which this
package gives as its own (as_runtime_siblings)."""

from ...common import as_runtime_siblings, data, flags, host, metrics, routing, weights

as_runtime_siblings(__name__, (data, flags, host, metrics, routing, weights))
