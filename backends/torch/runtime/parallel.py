"""Data, expert and tensor parallelism for a generated model, applied from outside. Runtime support.

The model (model.py) is a plain nn.Module that knows nothing about processes; `parallelize` takes
it whole (as torchtitan's parallelize step does) and, from the DeviceMesh built from the spec's
mesh axes and the logical-axis RULES:

- keeps each rank's shard of every parameter whose logical axes are split (`experts` over the
  expert axes, `heads`, `mlp` and `vocab` over the model axes), as the JAX program's shardings do;
- expert parallelism: wraps each `Experts` module so that an all-to-all over the expert axes
  carries every rank's slots of each expert to the rank that holds it, and a second all-to-all
  brings the outputs back (capacity padding makes every split the same size: [G, E, C, D]);
- tensor parallelism, when heads or d_ff are split: Megatron's pair of conjugate operators around
  each Attention, FeedForward and Experts module: the input passes unchanged forward and its
  gradient is all-reduced backward; the output, a partial sum over this rank's heads or d_ff
  units, is all-reduced forward. This is written by hand rather than with DTensor's
  parallelize_module: the parameters keep the IR's einsum layouts ([D, H, K], [E, D, F]), which
  ColwiseParallel / RowwiseParallel (made for nn.Linear's [out, in]) do not describe, and two
  small autograd functions say exactly which collectives run;
- vocabulary parallelism, when vocab is split (Megatron's vocab-parallel embedding and loss): the
  Embedding, Logits and CrossEntropy modules are replaced by ones that hold rows [start, start +
  V / n) of the table or columns of lm_head. A lookup finds this rank's ids and the shards' rows
  are summed (an all-reduce of [B, L, D]); the logits stay split, the loss takes the maximum over
  the shards (an all-reduce of [B, L]), then the sums of exponentials and the target's logits (one
  of [2, B, L]), and its backward needs no communication; the input of the logits matmul gets
  Megatron's f;
- data parallelism: tokens are split over the batch axes (data and expert by default: in Switch's
  expert parallelism every rank routes its own tokens, Sec. 6). Dense parameters are replicated
  over the batch axes and their gradients are averaged there by DistributedDataParallel, which
  overlaps the all-reduce with the backward pass. Expert parameters are left out of DDP: the
  all-to-all's backward already brought them the gradient of every token routed to them from the
  expert group, so they are summed only over the replicas of the same expert (the batch axes
  that do not split experts; the data axis by default).

Every rank computes its loss as its share of the global batch's mean (see layers.masked_mean), so
the global loss is the mean over batch shards, and the numbers do not depend on the mesh.

Every rank initialises the whole model (model.build) and keeps its shards: weights do not depend
on the mesh, at the cost of host memory for one full copy.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.nn.parallel import DistributedDataParallel

from . import flags
from .layers import Attention, CrossEntropy, Embedding, FeedForward, Logits, Stream, ir_name, module_path
from .moe import Experts

# Logical axes a torch program splits; any other axis the rules split is rejected when compiling.
SPLIT_PARAMETER_AXES = ("experts", "heads", "mlp", "vocab")

# ---- the mesh -------------------------------------------------------------------------------------------


class Mesh:
    """The spec's mesh axes over this job's processes, with process groups over any set of axes.

    Axes are always taken in mesh order, and axes of size 1 are skipped: a group of one rank is
    never created, and `group` returns None where there is nothing to communicate.
    """

    def __init__(self, axes: Mapping[str, int], device_mesh: DeviceMesh | None) -> None:
        self.axes = dict(axes)
        self.device_mesh = device_mesh
        self._groups: dict[tuple[str, ...], dist.ProcessGroup | None] = {}
        if device_mesh is None:
            self.coordinate = dict.fromkeys(self.axes, 0)
        else:
            coordinate = device_mesh.get_coordinate()
            assert coordinate is not None, "this rank is not part of the mesh"
            self.coordinate = dict(zip(self.axes, coordinate, strict=True))

    def canonical(self, axes: Iterable[str]) -> tuple[str, ...]:
        wanted = set(axes)
        return tuple(axis for axis in self.axes if axis in wanted and self.axes[axis] > 1)

    def size(self, axes: Iterable[str]) -> int:
        """Ranks along `axes` (their product)."""
        total = 1
        for axis in self.canonical(axes):
            total *= self.axes[axis]
        return total

    def index(self, axes: Iterable[str]) -> int:
        """This rank's position along `axes`, flattened in mesh order (row-major)."""
        position = 0
        for axis in self.canonical(axes):
            position = position * self.axes[axis] + self.coordinate[axis]
        return position

    def group(self, axes: Iterable[str]) -> dist.ProcessGroup | None:
        """The process group of the ranks that differ from this one only along `axes`."""
        key = self.canonical(axes)
        if not key or self.device_mesh is None:
            return None
        if key not in self._groups:  # collective: every rank creates the same groups in the same order
            if len(key) == 1:
                self._groups[key] = self.device_mesh.get_group(key[0])
            else:  # torchtitan's idiom for a group over several mesh dims
                self._groups[key] = self.device_mesh[key]._flatten("_".join(key)).get_group()
        return self._groups[key]


def init_distributed(axes: Mapping[str, int], timeout_seconds: float, device: str) -> tuple[Mesh, torch.device]:
    """Join the job torchrun started (or run alone) and build the DeviceMesh of the spec's axes.

    `timeout_seconds` bounds every collective: when a rank dies, the others fail with an error
    instead of waiting forever. gloo on CPU, nccl on GPUs (one per process, by LOCAL_RANK).
    """
    needed = 1
    for size in axes.values():
        needed *= size
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        local_device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(local_device)
    else:
        local_device = torch.device("cpu")
    if world != needed:  # every rank finds the same: each host's first says it (there is no process group yet)
        if not flags.first_on_host():
            raise SystemExit(1)
        command = shlex.join(sys.argv)  # this program's path and flags, as started
        raise SystemExit(
            f"error: the mesh {' x '.join(f'{axis}={size}' for axis, size in axes.items())} needs {needed} "
            f"process{'es' if needed > 1 else ''}, this job has {world}.\n"
            f"hint: torchrun --standalone --nproc-per-node {needed} {command}"
            + ("" if needed > 1 else f"   (or plain `python {command}`)")
        )
    if "RANK" not in os.environ and world == 1:
        return Mesh(axes, None), local_device  # a plain `python train.py`: no process group at all
    try:
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=timedelta(seconds=timeout_seconds),
            device_id=local_device if use_cuda else None,
        )
    except (dist.DistError, RuntimeError) as error:  # most often a rank that failed before it could join
        cause = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise SystemExit(
            f"error: rank {os.environ.get('RANK', '?')}: the {world} processes did not come together "
            f"({type(error).__name__}: {cause})\n"
            f"hint: a rank that failed while starting (its data, its flags) says why in its own log; one that "
            f"is slow to start needs a longer --timeout (now {timeout_seconds:g}s)"
        ) from None
    device_mesh = init_device_mesh(local_device.type, tuple(axes.values()), mesh_dim_names=tuple(axes))
    return Mesh(axes, device_mesh), local_device


# ---- a collective that timed out -------------------------------------------------------------------

_TIMED_OUT = "switchc/timed-out/"  # + rank: a key in the job's store, set by a rank whose collective timed out


class Whereabouts:
    """Where this rank is ("in step 3", "in the evaluation after step 4"), so that a collective that
    times out can say where it was and which ranks it may have waited for.

    A rank that hangs (a stuck read, a deadlock, a filesystem that stopped answering) times out
    nothing itself: the ranks waiting for it do, after --timeout, and gloo's message names neither
    the flag nor the rank. Each rank that times out sets a key in the job's store (the TCPStore
    that torchrun's agent, or rank 0, serves, apart from the process group's connections, which
    the timeout has closed), and lists the ranks that have not set theirs: the one that hung is
    among them.
    """

    def __init__(self, rank: int, world: int) -> None:
        self.rank = rank
        self.world = world
        self.doing = "before the first step"

    def timed_out(self, error: BaseException, timeout_seconds: float) -> list[str]:
        """The lines that explain `error` when it is a collective's timeout (none otherwise)."""
        text = str(error).lower()
        if self.world == 1 or ("timed out" not in text and "timeout" not in text):
            return []
        lines = [f"a collective {self.doing} waited --timeout {timeout_seconds:g}s for a rank that did not come"]
        waiting = self._not_timed_out()
        if waiting:
            if len(waiting) == 1:
                lines.append(
                    f"rank {waiting[0]} had not timed out (yet): most likely it is the one that hung or slowed "
                    "down; its log says what it was doing, a stack dump (py-spy dump --pid PID on its host) where it is"
                )
            else:
                lines.append(
                    f"ranks {', '.join(map(str, waiting))} had not timed out (yet): the one that hung or slowed down "
                    "is among them; their logs say what they were doing, a stack dump (py-spy dump --pid PID on "
                    "their hosts) where they are"
                )
        lines.append(f"hint: if nothing is wrong and a rank only takes longer than that {self.doing}, raise --timeout")
        return lines

    def _not_timed_out(self) -> list[int] | None:
        """The other ranks that have not said in the store that a collective of theirs timed out
        (None: the store is gone with its host)."""
        try:
            store = dist.distributed_c10d._get_default_store()  # the process group's own, with its prefix
            store.set(f"{_TIMED_OUT}{self.rank}", self.doing)
            return [
                rank for rank in range(self.world) if rank != self.rank and not store.check([f"{_TIMED_OUT}{rank}"])
            ]
        except (AttributeError, RuntimeError, ValueError):  # DistStoreError is a RuntimeError
            return None


# ---- collectives with gradients ------------------------------------------------------------------


class _AllToAll(torch.autograd.Function):
    """Equal-split all-to-all over dim 0 ([n, ...]: chunk j goes to rank j of the group). Its
    gradient is the same all-to-all: chunk j of the gradient came from rank j."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        x = x.contiguous()
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        out = torch.empty_like(grad)
        dist.all_to_all_single(out, grad, group=ctx.group)
        return out, None


class _CopyToShards(torch.autograd.Function):
    """Megatron's f: the identity forward; backward, the partial input gradients of the shards
    (each from its own heads or d_ff units) are summed."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _SumShards(torch.autograd.Function):
    """Megatron's g: forward, the shards' partial outputs are summed; backward, the identity."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        x = x.contiguous().clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


# The collectives with gradients, as the modules below call them (keep_collectives_eager wraps them).
_all_to_all = _AllToAll.apply
_copy_to_shards = _CopyToShards.apply
_sum_shards = _SumShards.apply


def dispatch_to_experts(slots: torch.Tensor, group: dist.ProcessGroup, ranks: int) -> torch.Tensor:
    """[G, E, C, D] (this rank's groups, every expert) -> [n * G, E / n, C, D] (every rank's
    groups, this rank's experts), n = ranks in the expert group. Groups come rank by rank."""
    groups, experts, capacity, d_model = slots.shape
    chunks = slots.reshape(groups, ranks, experts // ranks, capacity, d_model).transpose(0, 1)
    received = _all_to_all(chunks, group)  # [n (source rank), G, E / n, C, D]
    return received.reshape(ranks * groups, experts // ranks, capacity, d_model)


def return_from_experts(out: torch.Tensor, group: dist.ProcessGroup, ranks: int) -> torch.Tensor:
    """The inverse of dispatch_to_experts: [n * G, E / n, C, D] -> [G, E, C, D]."""
    total, local_experts, capacity, d_model = out.shape
    chunks = out.reshape(ranks, total // ranks, local_experts, capacity, d_model)
    received = _all_to_all(chunks, group)  # [n (expert shard), G, E / n, C, D]
    return received.transpose(0, 1).reshape(total // ranks, ranks * local_experts, capacity, d_model)


# ---- a split vocabulary ----------------------------------------------------------------------------------


class _SplitCrossEntropy(torch.autograd.Function):
    """Token cross-entropy of logits split over the vocabulary: this rank holds the logits of ids
    [start, start + n). Forward: the maximum over the shards, then the sums of exponentials and the
    target's logit (each on the rank holding it, 0 elsewhere) over the shards, so every rank has
    the whole loss. Backward: softmax minus the target's one-hot, on this rank's columns only."""

    @staticmethod
    def forward(
        ctx: Any, logits: torch.Tensor, targets: torch.Tensor, start: int, group: dist.ProcessGroup
    ) -> torch.Tensor:
        ctx.dtype = logits.dtype
        logits = logits.float()
        columns = logits.shape[-1]
        top = logits.amax(dim=-1)
        dist.all_reduce(top, op=dist.ReduceOp.MAX, group=group)
        local = targets.long() - start
        mine = (local >= 0) & (local < columns)
        index = local.clamp(0, columns - 1)[..., None]
        exp = (logits - top[..., None]).exp_()
        target_logit = (logits.gather(-1, index)[..., 0] - top).masked_fill_(~mine, 0.0)
        sums = torch.stack([exp.sum(dim=-1), target_logit])
        dist.all_reduce(sums, group=group)
        total, target_logit = sums
        ctx.save_for_backward(exp.div_(total[..., None]), index, mine)  # the softmax
        return total.log() - target_logit

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        softmax, index, mine = ctx.saved_tensors
        grad_logits = softmax.scatter_add_(-1, index, -mine[..., None].float()).mul_(grad[..., None])
        return grad_logits.to(ctx.dtype), None, None, None


_split_cross_entropy = _SplitCrossEntropy.apply


def keep_collectives_eager() -> None:
    """--compile: every collective runs outside torch.compile's graphs, issued as written, in the
    order every rank takes, where a traced one could be moved or fused by the compiler. Applied
    only then: torch.compiler.disable imports torch._dynamo (a second at start) into every rank."""
    global _all_to_all, _copy_to_shards, _sum_shards, _split_cross_entropy
    _all_to_all = torch.compiler.disable(_AllToAll.apply)
    _copy_to_shards = torch.compiler.disable(_CopyToShards.apply)
    _sum_shards = torch.compiler.disable(_SumShards.apply)
    _split_cross_entropy = torch.compiler.disable(_SplitCrossEntropy.apply)


class SplitEmbedding(Embedding):
    """Rows [start, start + V / n) of the embedding table (Megatron's VocabParallelEmbedding): a
    lookup finds the ids this rank holds and the shards' rows are summed; `attend` gives this
    rank's columns of the logits."""

    def __init__(self, whole: Embedding, group: dist.ProcessGroup, index: int) -> None:
        nn.Module.__init__(self)
        self.embedding = whole.embedding  # the same (already narrowed) parameter, at the same name
        self.group = group
        self.start = index * self.embedding.shape[0]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.start
        other = (local < 0) | (local >= self.embedding.shape[0])
        rows = F.embedding(local.masked_fill(other, 0), self.embedding).masked_fill(other[..., None], 0.0)
        return _sum_shards(rows, self.group)

    def attend(self, y: torch.Tensor) -> torch.Tensor:
        return _copy_to_shards(y, self.group) @ self.embedding.T


class SplitLogits(Logits):
    """Columns [start, start + V / n) of lm_head: this rank's logits, left split for SplitCrossEntropy."""

    def __init__(self, whole: Logits, group: dist.ProcessGroup) -> None:
        nn.Module.__init__(self)
        self.lm_head = whole.lm_head
        self.group = group

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return _copy_to_shards(y, self.group) @ self.lm_head


class SplitCrossEntropy(CrossEntropy):
    """The token loss of logits split over the vocabulary, this rank's shard being number `index`."""

    def __init__(self, group: dist.ProcessGroup, index: int) -> None:
        super().__init__()
        self.group = group
        self.index = index

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss: torch.Tensor = _split_cross_entropy(logits, targets, self.index * logits.shape[-1], self.group)
        return loss


# ---- the plan --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Which mesh axes split tokens, experts, heads, d_ff and the vocabulary (from the logical-axis rules)."""

    batch: tuple[str, ...]
    experts: tuple[str, ...]
    heads: tuple[str, ...]
    mlp: tuple[str, ...]
    vocab: tuple[str, ...] = ()

    @classmethod
    def from_rules(cls, rules: Mapping[str, Sequence[str]]) -> Plan:
        plan = cls(*(tuple(rules.get(axis, ())) for axis in ("batch", "experts", "heads", "mlp", "vocab")))
        tensor_axes = set(plan.heads) | set(plan.mlp) | set(plan.vocab)
        if tensor_axes & (set(plan.batch) | set(plan.experts)):
            raise ValueError(
                f"heads / mlp / vocab must be split over axes that split neither tokens nor experts: {plan}"
            )
        return plan


@dataclass
class Parallel:
    """A model placed on the mesh, and what a training step needs to know about that placement."""

    module: nn.Module  # call this one: the model, wrapped in DDP where dense gradients are reduced
    model: nn.Module  # the model itself (parameters by IR name; local shards)
    mesh: Mesh
    plan: Plan
    placements: dict[str, tuple[tuple[str, ...], ...]]  # IR name -> per dim, the mesh axes splitting it
    expert_params: list[nn.Parameter] = field(default_factory=list)

    @property
    def batch_shards(self) -> int:
        return self.mesh.size(self.plan.batch)

    @property
    def batch_shard(self) -> int:
        return self.mesh.index(self.plan.batch)

    def batch_rows(self, batch_size: int) -> slice:
        """This rank's rows of a global batch (ranks that differ only along non-batch axes share them)."""
        rows = batch_size // self.batch_shards
        return slice(self.batch_shard * rows, (self.batch_shard + 1) * rows)

    def finish_gradients(self) -> None:
        """Sum the expert gradients over the replicas of each expert, as the mean over batch
        shards asks: the all-to-all's backward summed the expert group; DDP did the rest."""
        grads = [p.grad for p in self.expert_params if p.grad is not None]
        replicas = [axis for axis in self.plan.batch if axis not in self.plan.experts]
        group = self.mesh.group(replicas)
        # Each expert got the gradient of its group's tokens once per rank along expert axes that
        # do not split tokens (those ranks sent it the same tokens): divide by every such copy too.
        scale = 1.0 / self.mesh.size((*self.plan.batch, *self.plan.experts))
        if not grads or (group is None and scale == 1.0):
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        if group is not None:
            dist.all_reduce(flat, group=group)
        flat.mul_(scale)
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def global_sum(self, values: Mapping[tuple[str, ...], torch.Tensor]) -> torch.Tensor:
        """Sum per-shard scalars over the mesh axes that split them (keys: those axes)."""
        total = torch.zeros(())
        for axes, value in values.items():
            group = self.mesh.group(axes)
            if group is not None:
                value = value.clone()
                dist.all_reduce(value, group=group)
            total = total + value.cpu()
        return total

    def grad_norm(self) -> torch.Tensor:
        """The global gradient norm, as of the whole (unsharded) parameters."""
        squares: dict[tuple[str, ...], torch.Tensor] = {}
        for path, param in self.model.named_parameters():
            if param.grad is None:
                continue
            axes = split_axes(self.placements[ir_name(path)])
            square = torch.linalg.vector_norm(param.grad, dtype=torch.float32).square()  # one read, no copy
            squares[axes] = squares[axes] + square if axes in squares else square
        return self.global_sum(squares).sqrt()

    def any_rank(self, flag: bool) -> bool:
        """Whether `flag` is set on some rank: the same answer on every rank (a collective over all)."""
        if self.mesh.device_mesh is None:
            return flag
        value = torch.tensor([int(flag)], device=self.mesh.device_mesh.device_type)  # cuda: the current device
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def mean_over_batch(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over batch shards of a per-shard tensor of metrics (no gradient)."""
        group = self.mesh.group(self.plan.batch)
        if group is None:
            return values
        values = values.detach().clone()
        dist.all_reduce(values, group=group)
        return values / self.batch_shards


def split_axes(placement: Sequence[tuple[str, ...]]) -> tuple[str, ...]:
    """Every mesh axis that splits some dim of a parameter (its shards are spread over these)."""
    return tuple(dict.fromkeys(axis for dim in placement for axis in dim))


def _narrow(value: torch.Tensor, dim: int, shards: int, index: int) -> torch.Tensor:
    size = value.shape[dim] // shards
    return value.narrow(dim, index * size, size).contiguous()


def _shard_parameters(
    model: nn.Module, param_axes: Mapping[str, Sequence[str | None]], rules: Mapping[str, Sequence[str]], mesh: Mesh
) -> dict[str, tuple[tuple[str, ...], ...]]:
    """Keep this rank's piece of every split parameter; returns where each piece sits."""
    placements = {}
    with torch.no_grad():
        for name, logical in param_axes.items():
            param = model.get_parameter(module_path(name))
            dims = []
            value = param.data
            for dim, axis in enumerate(logical):
                mesh_axes = mesh.canonical(rules.get(axis, ())) if axis in SPLIT_PARAMETER_AXES else ()
                if mesh_axes:
                    value = _narrow(value, dim, mesh.size(mesh_axes), mesh.index(mesh_axes))
                dims.append(mesh_axes)
            param.data = value
            placements[name] = tuple(dims)
    return placements


def _fold(kwargs: dict[str, Any], index: int) -> None:
    """Shards of one tensor draw independent dropout masks: fold the shard index into the stream."""
    rng = kwargs.get("rng")
    if isinstance(rng, Stream):
        kwargs["rng"] = rng.fold(index)


def _tensor_parallel(module: nn.Module, group: dist.ProcessGroup, index: int, activations: int) -> None:
    """Megatron's f before and g after a module that holds a shard of heads or d_ff.

    f applies to the first `activations` arguments (Attention: x and memory; FeedForward: x); the
    rest (the position bias of this rank's heads, masks) pass unchanged.
    """

    def before(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        inputs = list(args)
        for i in range(activations):
            same = [j for j in range(i) if args[j] is args[i]]  # self-attention: x is memory, one f
            inputs[i] = inputs[same[0]] if same else _copy_to_shards(args[i], group)
        _fold(kwargs, index)
        return tuple(inputs), kwargs

    def after(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        return _sum_shards(output, group)

    module.register_forward_pre_hook(before, with_kwargs=True)
    module.register_forward_hook(after)


def _expert_parallel(
    module: Experts,
    expert_group: dist.ProcessGroup | None,
    ranks: int,
    tensor_group: dist.ProcessGroup | None,
    index: int,
) -> None:
    """The all-to-alls around a rank's experts, and (when d_ff is split) Megatron's f and g inside them."""

    def before(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        (slots,) = args
        if expert_group is not None:
            slots = dispatch_to_experts(slots, expert_group, ranks)
        if tensor_group is not None:
            slots = _copy_to_shards(slots, tensor_group)
        _fold(kwargs, index)
        return (slots,), kwargs

    def after(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        if tensor_group is not None:
            output = _sum_shards(output, tensor_group)
        if expert_group is not None:
            output = return_from_experts(output, expert_group, ranks)
        return output

    module.register_forward_pre_hook(before, with_kwargs=True)
    module.register_forward_hook(after)


def apply_expert_and_tensor_parallel(model: nn.Module, mesh: Mesh, plan: Plan) -> None:
    """Wrap every Experts module in its all-to-alls, and every module holding a shard of heads or
    d_ff in Megatron's f and g (parameters must already be sharded)."""
    expert_group, expert_ranks = mesh.group(plan.experts), mesh.size(plan.experts)
    mlp_group = mesh.group(plan.mlp)
    for module in model.modules():
        if isinstance(module, Experts):
            if expert_group is not None or mlp_group is not None:
                index = mesh.index((*plan.experts, *plan.mlp))
                _expert_parallel(module, expert_group, expert_ranks, mlp_group, index)
        elif isinstance(module, Attention | FeedForward):
            axes = plan.heads if isinstance(module, Attention) else plan.mlp
            group = mesh.group(axes)
            if group is not None:
                _tensor_parallel(module, group, mesh.index(axes), 2 if isinstance(module, Attention) else 1)


def apply_vocab_parallel(model: nn.Module, mesh: Mesh, plan: Plan) -> None:
    """Replace the embedding, logits and loss modules by their split-vocabulary versions
    (parameters must already be sharded)."""
    group = mesh.group(plan.vocab)
    if group is None:
        return
    index = mesh.index(plan.vocab)
    for path, module in list(model.named_modules()):
        if isinstance(module, Embedding):
            split: nn.Module = SplitEmbedding(module, group, index)
        elif isinstance(module, Logits):
            split = SplitLogits(module, group)
        elif isinstance(module, CrossEntropy):
            split = SplitCrossEntropy(group, index)
        else:
            continue
        parent, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent), name, split)


def apply_data_parallel(
    model: nn.Module, mesh: Mesh, plan: Plan, ignored: Sequence[str], device: torch.device
) -> nn.Module:
    """DDP over the batch axes for every parameter but the `ignored` ones (torch paths)."""
    batch_group = mesh.group(plan.batch)
    if batch_group is None:
        return model
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, list(ignored))
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, process_group=batch_group
    )


def parallelize(
    model: nn.Module,
    mesh: Mesh,
    rules: Mapping[str, Sequence[str]],
    param_axes: Mapping[str, Sequence[str | None]],
    device: torch.device,
) -> Parallel:
    """Place a whole, initialised model on the mesh (see the module docstring); every rank calls it."""
    plan = Plan.from_rules(rules)
    placements = _shard_parameters(model, param_axes, rules, mesh)
    # Create every process group up front, in the same order on every rank.
    replicas = [a for a in plan.batch if a not in plan.experts]
    for axes in (plan.batch, plan.experts, plan.heads, plan.mlp, plan.vocab, replicas):
        mesh.group(axes)
    for placement in placements.values():  # the groups gradient norms and Adafactor reduce over
        for axes in (*placement, split_axes(placement)):
            mesh.group(axes)
    model.to(device)
    apply_expert_and_tensor_parallel(model, mesh, plan)
    apply_vocab_parallel(model, mesh, plan)
    expert_paths = [module_path(name) for name, axes in param_axes.items() if "experts" in axes]
    module = apply_data_parallel(model, mesh, plan, expert_paths, device)
    expert_params = [model.get_parameter(path) for path in expert_paths]
    return Parallel(module, model, mesh, plan, placements, expert_params)
