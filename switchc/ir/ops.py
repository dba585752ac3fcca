"""The closed op vocabulary of the switchc IR. Every node of a graph is one of these.

A graph (see switchc.ir.build) is a networkx.DiGraph whose nodes are op names; node attribute
"op" holds the op, a frozen dataclass from the list below. A data edge u -> v carries u's output
into v's input `port` (edge attributes "port" and "tensor"); a gradient edge (attribute
"gradient": True) links an op to the node that reduces its parameters' gradients.

Every op knows its `loop()` (the dims of its iteration space, like the indices of an einsum),
its `inputs()` by port, its `output()`, and its `params()`. Sizes are global: the whole batch,
every expert. Every op keeps the `span` of the spec value it came from, the `layer` it belongs to
("encoder.3", "decoder.final", "head", ...), and whether it sits `in_block` (full
rematerialization recomputes exactly those ops).

Dims (name: logical axes that may split it):
    batch: batch        length: length       kv_length: -        embed: embed
    heads: heads        kv: kv               mlp: mlp            vocab: vocab
    experts: experts (ExpertFFN) or - (router, dispatch, combine: every device sees all experts)
    groups: batch, length (routing groups; a device's tokens split into groups)
    group_tokens: -     capacity: -          buckets: -
A dim with no logical axes is never split: attention needs whole sequences, routing needs the
whole group.

Model ops (inputs -> output; params):
    Input          -> int32 [batch, length]                         the token ids (inputs or targets)
    Embed          ids -> [batch, length, embed]; table [vocab, embed] (shared by both stacks)
    RelativeBias   -> [heads, length, kv_length]; table [buckets, heads] (one per stack)
    RMSNorm        x -> x; scale [embed]                            T5's scale-only layer norm
    Attention      x, bias | memory -> [batch, length, embed]; q, k, v [embed, heads, kv], o [heads, kv, embed]
                   self-attention (with the stack's position bias, causal in the decoder) or
                   cross-attention over the encoder output (no bias)
    DenseFFN       x -> x; wi [embed, mlp] (wi_0, wi_1 when gated), wo [mlp, embed]
    Group          [batch, length, embed] -> [groups, group_tokens, embed]   a free reshape
    Router         x -> float32 logits [groups, group_tokens, experts]; w [embed, experts]
    Dispatch       x, logits -> [groups, experts, capacity, embed]           index gather into slots
    ExpertFFN      slots -> slots; wi [experts, embed, mlp] (wi_0, wi_1), wo [experts, mlp, embed]
    Combine        slots, logits -> [groups, group_tokens, embed]           gate-weighted gather back
    Ungroup        [groups, group_tokens, embed] -> [batch, length, embed]   a free reshape
    AuxLoss        logits -> float32 scalar                         load balancing, eq. 4-6
    RouterZLoss    logits -> float32 scalar                         ST-MoE z-loss (when its coefficient > 0)
    Residual       x, y -> x + y
    Dropout        x -> x                                           (only when the rate is > 0)
    Logits         x -> [batch, length, vocab]; the shared table (tied) or lm_head [embed, vocab]
    CrossEntropy   logits, labels -> float32 [batch, length]        per-token loss
    Loss           token losses, aux scalars... -> float32 scalar   the training objective
    Output         loss -> loss                                     the graph's one sink

Collectives (inserted by switchc.passes.shard, never by build; each moves one tensor from layout
`src` to layout `dst` over `mesh_axes`, and says what it costs in the forward and backward pass):
    AllReduce          forward all-reduce of a partial sum; backward nothing
    ReduceScatter      forward reduce-scatter; backward all-gather
    AllGather          forward all-gather; backward reduce-scatter
    AllToAll           forward all-to-all (expert dispatch / combine); backward all-to-all
    Shard              forward a local slice (free); backward all-gather
    BackwardAllReduce  forward nothing; backward all-reduce of a gradient that is a partial sum
                       (the input of a model-parallel matmul: Megatron's "f")
    GradientAllReduce  once per step: all-reduce of parameter gradients over the devices that
                       hold replicas of those parameters (data parallel; expert replicas only)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from switchc.errors import Span
from switchc.ir.tensor import Dim, DType, Layout, Mesh, Param, TensorType, resolve_axes

Activation = Literal["relu", "gelu", "geglu", "swiglu"]
GATED: frozenset[str] = frozenset({"geglu", "swiglu"})


# ---- dims ---------------------------------------------------------------------------------------


def batch_dim(size: int) -> Dim:
    return Dim("batch", size, ("batch",))


def length_dim(size: int, shardable: bool = True) -> Dim:
    return Dim("length", size, ("length",) if shardable else ())


def embed_dim(size: int) -> Dim:
    return Dim("embed", size, ("embed",))


def experts_dim(size: int, sharded: bool) -> Dim:
    return Dim("experts", size, ("experts",) if sharded else ())


def groups_dim(size: int) -> Dim:
    return Dim("groups", size, ("batch", "length"))


# ---- layouts of one op --------------------------------------------------------------------------


@dataclass(frozen=True)
class OpLayout:
    """An op placed on the mesh: mesh axes of each loop dim, and the layouts it reads and writes."""

    loop: tuple[tuple[str, tuple[str, ...]], ...]
    inputs: tuple[Layout, ...]
    output: Layout | None
    params: tuple[Layout, ...]

    def loop_axes(self) -> set[str]:
        return {axis for _, axes in self.loop for axis in axes}

    def axes_of(self, dim_name: str) -> tuple[str, ...]:
        return dict(self.loop)[dim_name]


def _restrict(tensor: TensorType, loop: Mapping[str, tuple[str, ...]], op: Op) -> tuple[tuple[str, ...], ...]:
    missing = [name for name in tensor.names if name not in loop]
    if missing:
        raise ValueError(f"op {op.name}: tensor dims {missing} are not in its loop {list(loop)}")
    return tuple(loop[name] for name in tensor.names)


# ---- the base op --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Op:
    """Fields every op has. Subclasses add their sizes and implement the signature methods."""

    name: str
    layer: str
    span: Span = field(compare=False, repr=False)
    in_block: bool = False

    # A gradient that reaches this op as a partial sum needs no all-reduce where it arrives when
    # the op's backward pass is linear and ends in its own parameters (a gathered bias table): it
    # is reduced with those parameters' gradients instead.
    GRADS_ONLY_TO_PARAMS: ClassVar[bool] = False

    @property
    def kind(self) -> str:
        return type(self).__name__

    def loop(self) -> tuple[Dim, ...]:
        raise NotImplementedError(self.kind)

    def inputs(self) -> tuple[TensorType, ...]:
        raise NotImplementedError(self.kind)

    def output(self) -> TensorType | None:
        raise NotImplementedError(self.kind)

    def params(self) -> tuple[Param, ...]:
        return ()

    def place(self, mesh: Mesh) -> OpLayout:
        """This op's layout on `mesh`: its loop dims by the mesh rules, tensors by restriction.

        The output is a partial sum over the mesh axes of loop dims it does not keep (a sum over
        a split contraction dim, a gather from a split table).
        """
        dims = self.loop()
        loop = dict(zip((d.name for d in dims), resolve_axes(dims, mesh), strict=True))
        return self._layout_from_loop(loop, mesh)

    def _layout_from_loop(self, loop: dict[str, tuple[str, ...]], mesh: Mesh) -> OpLayout:
        inputs = tuple(Layout(_restrict(t, loop, self)) for t in self.inputs())
        out = self.output()
        output = None
        if out is not None:
            kept = set(out.names)
            reduced = {axis for name, axes in loop.items() if name not in kept for axis in axes}
            output = Layout(_restrict(out, loop, self), mesh.ordered(reduced))
        params = tuple(Layout(_restrict(p.tensor, loop, self)) for p in self.params())
        return OpLayout(tuple(loop.items()), inputs, output, params)


# ---- model ops ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Input(Op):
    source: Literal["inputs", "targets"]
    batch: int
    length: int

    def loop(self) -> tuple[Dim, ...]:
        return (batch_dim(self.batch), length_dim(self.length))

    def inputs(self) -> tuple[TensorType, ...]:
        return ()

    def output(self) -> TensorType:
        return TensorType(self.loop(), "int32")


@dataclass(frozen=True, kw_only=True)
class Embed(Op):
    batch: int
    length: int
    vocab: int
    d_model: int
    dtype: DType
    table: str  # parameter name; both stacks (and tied logits) share one table

    def loop(self) -> tuple[Dim, ...]:
        return (
            batch_dim(self.batch),
            length_dim(self.length),
            Dim("vocab", self.vocab, ("vocab",)),
            embed_dim(self.d_model),
        )

    def inputs(self) -> tuple[TensorType, ...]:
        return (TensorType((batch_dim(self.batch), length_dim(self.length)), "int32"),)

    def output(self) -> TensorType:
        return TensorType((batch_dim(self.batch), length_dim(self.length), embed_dim(self.d_model)), self.dtype)

    def params(self) -> tuple[Param, ...]:
        dims = (Dim("vocab", self.vocab, ("vocab",)), embed_dim(self.d_model))
        return (Param(self.table, TensorType(dims, self.dtype), "embedding"),)


@dataclass(frozen=True, kw_only=True)
class RelativeBias(Op):
    buckets: int
    heads: int
    length: int
    kv_length: int
    bidirectional: bool
    dtype: DType

    GRADS_ONLY_TO_PARAMS: ClassVar[bool] = True

    def loop(self) -> tuple[Dim, ...]:
        return (
            Dim("buckets", self.buckets),
            Dim("heads", self.heads, ("heads",)),
            Dim("length", self.length),
            Dim("kv_length", self.kv_length),
        )

    def inputs(self) -> tuple[TensorType, ...]:
        return ()

    def output(self) -> TensorType:
        return TensorType(self.loop()[1:], self.dtype)

    def params(self) -> tuple[Param, ...]:
        dims = (Dim("buckets", self.buckets), Dim("heads", self.heads, ("heads",)))
        return (Param(f"{self.name}/table", TensorType(dims, self.dtype), "position"),)


@dataclass(frozen=True, kw_only=True)
class TokenwiseOp(Op):
    """An op over [batch, length, embed] activations."""

    batch: int
    length: int
    d_model: int
    dtype: DType

    def loop(self) -> tuple[Dim, ...]:
        return (batch_dim(self.batch), length_dim(self.length), embed_dim(self.d_model))

    def activation_type(self) -> TensorType:
        return TensorType((batch_dim(self.batch), length_dim(self.length), embed_dim(self.d_model)), self.dtype)

    def inputs(self) -> tuple[TensorType, ...]:
        return (self.activation_type(),)

    def output(self) -> TensorType:
        return self.activation_type()


@dataclass(frozen=True, kw_only=True)
class RMSNorm(TokenwiseOp):
    def params(self) -> tuple[Param, ...]:
        return (Param(f"{self.name}/scale", TensorType((embed_dim(self.d_model),), self.dtype), "norm"),)


@dataclass(frozen=True, kw_only=True)
class Residual(TokenwiseOp):
    def inputs(self) -> tuple[TensorType, ...]:
        return (self.activation_type(), self.activation_type())


@dataclass(frozen=True, kw_only=True)
class Dropout(TokenwiseOp):
    rate: float


@dataclass(frozen=True, kw_only=True)
class Attention(Op):
    batch: int
    length: int
    kv_length: int
    d_model: int
    heads: int
    d_kv: int
    dtype: DType
    cross: bool  # attends over the encoder output (no position bias) instead of itself
    causal: bool
    dropout_rate: float = 0.0  # on the attention weights

    def _x(self) -> TensorType:
        return TensorType((batch_dim(self.batch), length_dim(self.length, False), embed_dim(self.d_model)), self.dtype)

    def loop(self) -> tuple[Dim, ...]:
        return (
            batch_dim(self.batch),
            length_dim(self.length, False),
            Dim("kv_length", self.kv_length),
            embed_dim(self.d_model),
            Dim("heads", self.heads, ("heads",)),
            Dim("kv", self.d_kv, ("kv",)),
        )

    def inputs(self) -> tuple[TensorType, ...]:
        if self.cross:
            memory = (batch_dim(self.batch), Dim("kv_length", self.kv_length), embed_dim(self.d_model))
            return (self._x(), TensorType(memory, self.dtype))
        bias = (Dim("heads", self.heads, ("heads",)), length_dim(self.length, False), Dim("kv_length", self.kv_length))
        return (self._x(), TensorType(bias, self.dtype))

    def output(self) -> TensorType:
        return self._x()

    def params(self) -> tuple[Param, ...]:
        e, h, k = embed_dim(self.d_model), Dim("heads", self.heads, ("heads",)), Dim("kv", self.d_kv, ("kv",))
        return (
            Param(f"{self.name}/q", TensorType((e, h, k), self.dtype), "attention"),
            Param(f"{self.name}/k", TensorType((e, h, k), self.dtype), "attention"),
            Param(f"{self.name}/v", TensorType((e, h, k), self.dtype), "attention"),
            Param(f"{self.name}/o", TensorType((h, k, e), self.dtype), "attention"),
        )


def _ffn_params(
    name: str,
    lead: tuple[Dim, ...],
    d_model: int,
    d_ff: int,
    activation: str,
    dtype: DType,
    kind: Literal["ffn", "expert"],
) -> tuple[Param, ...]:
    e, f = embed_dim(d_model), Dim("mlp", d_ff, ("mlp",))
    ins = ("wi_0", "wi_1") if activation in GATED else ("wi",)
    params = [Param(f"{name}/{w}", TensorType((*lead, e, f), dtype), kind) for w in ins]
    params.append(Param(f"{name}/wo", TensorType((*lead, f, e), dtype), kind))
    return tuple(params)


@dataclass(frozen=True, kw_only=True)
class DenseFFN(TokenwiseOp):
    d_ff: int
    activation: Activation
    dropout_rate: float = 0.0  # on the hidden activation

    def loop(self) -> tuple[Dim, ...]:
        return (*super().loop(), Dim("mlp", self.d_ff, ("mlp",)))

    def params(self) -> tuple[Param, ...]:
        return _ffn_params(self.name, (), self.d_model, self.d_ff, self.activation, self.dtype, "ffn")


@dataclass(frozen=True, kw_only=True)
class _RoutedOp(Op):
    """An op over routing groups: `groups` groups of `group_tokens` tokens each."""

    groups: int
    group_tokens: int
    d_model: int
    num_experts: int
    dtype: DType

    def _grouped(self) -> TensorType:
        dims = (groups_dim(self.groups), Dim("group_tokens", self.group_tokens), embed_dim(self.d_model))
        return TensorType(dims, self.dtype)

    def _logits(self) -> TensorType:
        dims = (groups_dim(self.groups), Dim("group_tokens", self.group_tokens), experts_dim(self.num_experts, False))
        return TensorType(dims, "float32")


def _grouped_layout(loop: Mapping[str, tuple[str, ...]]) -> Layout:
    """[groups, group_tokens, embed] made from [batch, length, embed] without moving data."""
    return Layout((loop["batch"] + loop["length"], (), loop["embed"]))


@dataclass(frozen=True, kw_only=True)
class Group(TokenwiseOp):
    """Reshape a device's tokens into routing groups; no data moves."""

    groups: int
    group_tokens: int

    def output(self) -> TensorType:
        dims = (groups_dim(self.groups), Dim("group_tokens", self.group_tokens), embed_dim(self.d_model))
        return TensorType(dims, self.dtype)

    def _layout_from_loop(self, loop: dict[str, tuple[str, ...]], mesh: Mesh) -> OpLayout:
        # Groups are made from each device's own tokens, so they are split as tokens are.
        tokens = Layout((loop["batch"], loop["length"], loop["embed"]))
        return OpLayout(tuple(loop.items()), (tokens,), _grouped_layout(loop), ())


@dataclass(frozen=True, kw_only=True)
class Ungroup(TokenwiseOp):
    """Reshape routing groups back into [batch, length, embed]; no data moves."""

    groups: int
    group_tokens: int

    def inputs(self) -> tuple[TensorType, ...]:
        dims = (groups_dim(self.groups), Dim("group_tokens", self.group_tokens), embed_dim(self.d_model))
        return (TensorType(dims, self.dtype),)

    def _layout_from_loop(self, loop: dict[str, tuple[str, ...]], mesh: Mesh) -> OpLayout:
        tokens = Layout((loop["batch"], loop["length"], loop["embed"]))
        return OpLayout(tuple(loop.items()), (_grouped_layout(loop),), tokens, ())


@dataclass(frozen=True, kw_only=True)
class Router(_RoutedOp):
    router_dtype: DType
    jitter_eps: float

    def loop(self) -> tuple[Dim, ...]:
        return (
            groups_dim(self.groups),
            Dim("group_tokens", self.group_tokens),
            embed_dim(self.d_model),
            experts_dim(self.num_experts, False),
        )

    def inputs(self) -> tuple[TensorType, ...]:
        return (self._grouped(),)

    def output(self) -> TensorType:
        return self._logits()

    def params(self) -> tuple[Param, ...]:
        dims = (embed_dim(self.d_model), experts_dim(self.num_experts, False))
        return (Param(f"{self.name}/w", TensorType(dims, self.dtype), "router"),)


@dataclass(frozen=True, kw_only=True)
class _SlottedOp(_RoutedOp):
    """Dispatch and Combine: each group's tokens against every expert's `capacity` slots."""

    capacity: int
    top_k: int

    def loop(self) -> tuple[Dim, ...]:
        return (
            groups_dim(self.groups),
            Dim("group_tokens", self.group_tokens),
            experts_dim(self.num_experts, False),
            Dim("capacity", self.capacity),
            embed_dim(self.d_model),
        )

    def _slots(self) -> TensorType:
        """[groups, experts, capacity, embed] with the experts whole (before the all-to-all)."""
        dims = (
            groups_dim(self.groups),
            experts_dim(self.num_experts, False),
            Dim("capacity", self.capacity),
            embed_dim(self.d_model),
        )
        return TensorType(dims, self.dtype)


@dataclass(frozen=True, kw_only=True)
class Dispatch(_SlottedOp):
    def inputs(self) -> tuple[TensorType, ...]:
        return (self._grouped(), self._logits())

    def output(self) -> TensorType:
        return self._slots()


@dataclass(frozen=True, kw_only=True)
class ExpertFFN(Op):
    groups: int
    num_experts: int
    capacity: int
    d_model: int
    d_ff: int
    activation: Activation
    dtype: DType
    top_k: int
    group_tokens: int  # tokens per routing group (model FLOPs count tokens, not slots)
    dropout_rate: float = 0.0  # expert dropout on the hidden activation (Table 4)

    def _slots(self) -> TensorType:
        dims = (
            groups_dim(self.groups),
            experts_dim(self.num_experts, True),
            Dim("capacity", self.capacity),
            embed_dim(self.d_model),
        )
        return TensorType(dims, self.dtype)

    def loop(self) -> tuple[Dim, ...]:
        return (*self._slots().dims, Dim("mlp", self.d_ff, ("mlp",)))

    def inputs(self) -> tuple[TensorType, ...]:
        return (self._slots(),)

    def output(self) -> TensorType:
        return self._slots()

    def params(self) -> tuple[Param, ...]:
        lead = (experts_dim(self.num_experts, True),)
        return _ffn_params(self.name, lead, self.d_model, self.d_ff, self.activation, self.dtype, "expert")


@dataclass(frozen=True, kw_only=True)
class Combine(_SlottedOp):
    def inputs(self) -> tuple[TensorType, ...]:
        return (self._slots(), self._logits())

    def output(self) -> TensorType:
        return self._grouped()


@dataclass(frozen=True, kw_only=True)
class _RouterLoss(_RoutedOp):
    coef: float

    def loop(self) -> tuple[Dim, ...]:
        return (groups_dim(self.groups), Dim("group_tokens", self.group_tokens), experts_dim(self.num_experts, False))

    def inputs(self) -> tuple[TensorType, ...]:
        return (self._logits(),)

    def output(self) -> TensorType:
        return TensorType((), "float32")


@dataclass(frozen=True, kw_only=True)
class AuxLoss(_RouterLoss):
    pass


@dataclass(frozen=True, kw_only=True)
class RouterZLoss(_RouterLoss):
    pass


@dataclass(frozen=True, kw_only=True)
class Logits(Op):
    batch: int
    length: int
    d_model: int
    vocab: int
    dtype: DType
    tied: bool
    table: str  # the shared embedding's name when tied

    def loop(self) -> tuple[Dim, ...]:
        return (
            batch_dim(self.batch),
            length_dim(self.length),
            embed_dim(self.d_model),
            Dim("vocab", self.vocab, ("vocab",)),
        )

    def inputs(self) -> tuple[TensorType, ...]:
        return (TensorType((batch_dim(self.batch), length_dim(self.length), embed_dim(self.d_model)), self.dtype),)

    def output(self) -> TensorType:
        dims = (batch_dim(self.batch), length_dim(self.length), Dim("vocab", self.vocab, ("vocab",)))
        return TensorType(dims, self.dtype)

    def params(self) -> tuple[Param, ...]:
        e, v = embed_dim(self.d_model), Dim("vocab", self.vocab, ("vocab",))
        if self.tied:
            return (Param(self.table, TensorType((v, e), self.dtype), "embedding"),)
        return (Param(f"{self.name}/lm_head", TensorType((e, v), self.dtype), "logits"),)


@dataclass(frozen=True, kw_only=True)
class CrossEntropy(Op):
    batch: int
    length: int
    vocab: int
    dtype: DType

    def loop(self) -> tuple[Dim, ...]:
        return (batch_dim(self.batch), length_dim(self.length), Dim("vocab", self.vocab, ("vocab",)))

    def inputs(self) -> tuple[TensorType, ...]:
        tokens = (batch_dim(self.batch), length_dim(self.length))
        return (TensorType(self.loop(), self.dtype), TensorType(tokens, "int32"))

    def output(self) -> TensorType:
        # Over a split vocabulary each device holds partial per-token statistics, summed by an
        # all-reduce of [batch, length] float32 before the loss.
        return TensorType((batch_dim(self.batch), length_dim(self.length)), "float32")


@dataclass(frozen=True, kw_only=True)
class Loss(Op):
    batch: int
    length: int
    aux_terms: int  # scalar router losses added to the token loss

    def loop(self) -> tuple[Dim, ...]:
        return (batch_dim(self.batch), length_dim(self.length))

    def inputs(self) -> tuple[TensorType, ...]:
        scalar = TensorType((), "float32")
        return (TensorType(self.loop(), "float32"), *([scalar] * self.aux_terms))

    def output(self) -> TensorType:
        return TensorType((), "float32")

    def _layout_from_loop(self, loop: dict[str, tuple[str, ...]], mesh: Mesh) -> OpLayout:
        placed = super()._layout_from_loop(loop, mesh)
        assert placed.output is not None
        # A sum is linear: the router losses may arrive as per-device partial sums, and the
        # total stays one until the final all-reduce.
        scalars = tuple(Layout((), placed.output.partial) for _ in range(self.aux_terms))
        return OpLayout(placed.loop, (placed.inputs[0], *scalars), placed.output, ())


@dataclass(frozen=True, kw_only=True)
class Output(Op):
    def loop(self) -> tuple[Dim, ...]:
        return ()

    def inputs(self) -> tuple[TensorType, ...]:
        return (TensorType((), "float32"),)

    def output(self) -> TensorType:
        return TensorType((), "float32")


# ---- collectives --------------------------------------------------------------------------------

CollectiveKind = Literal["all-reduce", "reduce-scatter", "all-gather", "all-to-all"]


@dataclass(frozen=True, kw_only=True)
class Collective(Op):
    """Moves `tensor` from layout `src` to `dst` over `mesh_axes` (a group of `group_size` devices).

    `bytes_per_device` is the buffer each device sends into the collective: the partial tensor of
    an all-reduce or reduce-scatter, the gathered tensor of an all-gather, either side of an
    all-to-all (both are the same size).
    """

    tensor: TensorType
    src: Layout
    dst: Layout
    mesh_axes: tuple[str, ...]
    group_size: int
    bytes_per_device: int
    source: str  # the op whose input or output this moves
    purpose: str

    FORWARD: ClassVar[CollectiveKind | None] = None
    BACKWARD: ClassVar[CollectiveKind | None] = None

    def loop(self) -> tuple[Dim, ...]:
        return self.tensor.dims

    def inputs(self) -> tuple[TensorType, ...]:
        return (self.tensor,)

    def output(self) -> TensorType:
        return self.tensor

    def place(self, mesh: Mesh) -> OpLayout:
        loop = tuple(zip(self.tensor.names, self.dst.axes, strict=True))
        return OpLayout(loop, (self.src,), self.dst, ())


@dataclass(frozen=True, kw_only=True)
class AllReduce(Collective):
    FORWARD: ClassVar[CollectiveKind | None] = "all-reduce"


@dataclass(frozen=True, kw_only=True)
class ReduceScatter(Collective):
    FORWARD: ClassVar[CollectiveKind | None] = "reduce-scatter"
    BACKWARD: ClassVar[CollectiveKind | None] = "all-gather"


@dataclass(frozen=True, kw_only=True)
class AllGather(Collective):
    FORWARD: ClassVar[CollectiveKind | None] = "all-gather"
    BACKWARD: ClassVar[CollectiveKind | None] = "reduce-scatter"


@dataclass(frozen=True, kw_only=True)
class AllToAll(Collective):
    FORWARD: ClassVar[CollectiveKind | None] = "all-to-all"
    BACKWARD: ClassVar[CollectiveKind | None] = "all-to-all"


@dataclass(frozen=True, kw_only=True)
class Shard(Collective):
    BACKWARD: ClassVar[CollectiveKind | None] = "all-gather"


@dataclass(frozen=True, kw_only=True)
class BackwardAllReduce(Collective):
    BACKWARD: ClassVar[CollectiveKind | None] = "all-reduce"


@dataclass(frozen=True, kw_only=True)
class GradientAllReduce(Op):
    """All-reduce of the gradients of `params` after the backward pass, once per step."""

    params_reduced: tuple[Param, ...]
    mesh_axes: tuple[str, ...]
    group_size: int
    bytes_per_device: int
    source: str  # the op that owns the parameters

    def loop(self) -> tuple[Dim, ...]:
        return ()

    def inputs(self) -> tuple[TensorType, ...]:
        return ()

    def output(self) -> TensorType | None:
        return None

    def place(self, mesh: Mesh) -> OpLayout:
        return OpLayout((), (), None, ())


MODEL_OPS: tuple[type[Op], ...] = (
    Input,
    Embed,
    RelativeBias,
    RMSNorm,
    Attention,
    DenseFFN,
    Group,
    Router,
    Dispatch,
    ExpertFFN,
    Combine,
    Ungroup,
    AuxLoss,
    RouterZLoss,
    Residual,
    Dropout,
    Logits,
    CrossEntropy,
    Loss,
    Output,
)
COLLECTIVE_OPS: tuple[type[Op], ...] = (
    AllReduce,
    ReduceScatter,
    AllGather,
    AllToAll,
    Shard,
    BackwardAllReduce,
    GradientAllReduce,
)
# The closed vocabulary: a graph holding any other node type is invalid (switchc.passes.verify).
VOCABULARY: tuple[type[Op], ...] = MODEL_OPS + COLLECTIVE_OPS
