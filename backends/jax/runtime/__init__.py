"""The JAX program's runtime as switchc keeps it. Every program gets a copy of these modules in its
runtime/ (RUNTIME_MODULES of backends/jax/program.py, not this file: a program's
runtime/__init__.py is written with it), beside copies of backends/common's COMMON_MODULES. So that
the modules import those the same way here as there (`from . import flags`), this package gives
backends/common's as its own.
"""

import sys

from ...common import data, flags, host, metrics, routing, weights

for _module in (data, flags, host, metrics, routing, weights):
    sys.modules[f"{__name__}.{_module.__name__.rpartition('.')[2]}"] = _module
