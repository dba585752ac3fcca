"""Spec: the declarative description of a Switch Transformer (format v1), parsed and validated.

from switchc.spec import load_spec
spec = load_spec("specs/switch-base.yaml", overrides=["moe.num_experts=64"])
"""

from switchc.spec.load import builtin_spec_names, load_spec, parse_spec, read_source
from switchc.spec.schema import (
    SPEC_VERSION,
    CapacityFactor,
    DataConfig,
    MeshConfig,
    ModelConfig,
    MoEConfig,
    OptimizerConfig,
    SpecBody,
    TrainConfig,
)
from switchc.spec.spec import Origin, Spec

__all__ = [
    "SPEC_VERSION",
    "CapacityFactor",
    "DataConfig",
    "MeshConfig",
    "MoEConfig",
    "ModelConfig",
    "OptimizerConfig",
    "Origin",
    "Spec",
    "SpecBody",
    "TrainConfig",
    "builtin_spec_names",
    "load_spec",
    "parse_spec",
    "read_source",
]
