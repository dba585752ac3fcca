"""The PyTorch backend: a DeviceMesh from the spec, all_to_all_single expert dispatch, torchrun."""

from switchc.backends import Target

TARGET = Target(
    name="torch",
    requires=("torch",),
    extra="torch",
    launch="torchrun --nproc-per-node {nproc} {program}",
)
