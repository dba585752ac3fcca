"""The PyTorch backend: a DeviceMesh from the spec, all_to_all_single expert dispatch, torchrun."""

from .. import Target

TARGET = Target(
    name="torch",
    requires=("torch",),
    extra="torch",
    launch="torchrun --nproc-per-node {nproc} {program}",
)
