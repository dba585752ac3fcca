"""Spec -> IR graph: the T5 encoder-decoder with Switch layers, one node per op instance.

The graph follows T5's architecture block by block: pre-norm residual blocks (self-attention,
cross-attention in the decoder, then an FFN or a Switch layer), one relative position bias per
stack, a final norm per stack, logits, cross-entropy and the router losses. A Switch layer is
Group -> Router -> Dispatch -> ExpertFFN -> Combine -> Ungroup, with the experts as one dim of
one ExpertFFN node, so building costs the same for 8 experts or 2048. Every node keeps the span
of the spec value it came from. Nodes are added in a topological order (passes keep one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import networkx as nx

from switchc.errors import Span, UserError
from switchc.ir import ops
from switchc.ir.graph import Graph, GraphInfo
from switchc.ir.routing import Routing, routing
from switchc.ir.tensor import DType, Mesh, TensorType, resolve_axes
from switchc.spec import Spec

SHARED_EMBEDDING = "shared/embedding"


@dataclass(frozen=True)
class _Stack:
    name: str  # "encoder" | "decoder"
    layers: int
    length: int
    layers_path: str  # the spec key that sets the stack's depth


class _RoutedFields(TypedDict):
    """Fields every op of one Switch layer's routing shares."""

    layer: str
    in_block: bool
    groups: int
    group_tokens: int
    d_model: int
    num_experts: int
    dtype: DType


class _Builder:
    def __init__(self, spec: Spec, mesh: Mesh) -> None:
        self.spec = spec
        self.mesh = mesh
        self.graph: Graph = nx.DiGraph()
        model = spec.model
        self.batch = spec.train.batch_size
        self.d_model = model.d_model
        self.dtype: DType = model.dtype
        self.dropout = model.dropout_rate
        self.routing: dict[str, Routing] = {}
        self.aux_losses: list[str] = []

    def add(self, op: ops.Op, *inputs: str) -> str:
        if op.name in self.graph:
            raise ValueError(f"duplicate op name {op.name}")
        self.graph.add_node(op.name, op=op)
        for port, source in enumerate(inputs):
            produced = self.graph.nodes[source]["op"].output()
            self.graph.add_edge(source, op.name, port=port, tensor=produced)
        return op.name

    def span(self, path: str) -> Span:
        return self.spec.span(path)

    # ---- pieces ------------------------------------------------------------------------------

    def tokenwise(
        self, cls: type[ops.TokenwiseOp], name: str, layer: str, length: int, path: str, *inputs: str, **kw: object
    ) -> str:
        op = cls(
            name=name,
            layer=layer,
            span=self.span(path),
            in_block=_is_block(layer),
            batch=self.batch,
            length=length,
            d_model=self.d_model,
            dtype=self.dtype,
            **kw,
        )
        return self.add(op, *inputs)

    def dropout_after(self, x: str, name: str, layer: str, length: int) -> str:
        """T5 drops out every sublayer's output (and the embeddings); nothing at rate 0."""
        if self.dropout == 0:
            return x
        return self.tokenwise(ops.Dropout, name, layer, length, "model.dropout_rate", x, rate=self.dropout)

    def attention(self, stack: _Stack, index: int, x: str, other: str, *, cross: bool) -> str:
        model = self.spec.model
        prefix = f"{stack.name}/{index}/{'cross_attention' if cross else 'attention'}"
        layer = f"{stack.name}.{index}"
        normed = self.tokenwise(ops.RMSNorm, f"{prefix}_norm", layer, stack.length, "model.d_model", x)
        op = ops.Attention(
            name=prefix,
            layer=layer,
            span=self.span("model.num_heads"),
            in_block=True,
            batch=self.batch,
            length=stack.length,
            kv_length=self.spec.train.inputs_length if cross else stack.length,
            d_model=self.d_model,
            heads=model.num_heads,
            d_kv=model.d_kv,
            dtype=self.dtype,
            cross=cross,
            causal=stack.name == "decoder" and not cross,
            dropout_rate=self.dropout,
        )
        out = self.add(op, normed, other)
        out = self.dropout_after(out, f"{prefix}_dropout", layer, stack.length)
        return self.tokenwise(ops.Residual, f"{prefix}_residual", layer, stack.length, stack.layers_path, x, out)

    def ffn(self, stack: _Stack, index: int, x: str) -> str:
        prefix = f"{stack.name}/{index}"
        layer = f"{stack.name}.{index}"
        normed = self.tokenwise(ops.RMSNorm, f"{prefix}/ffn_norm", layer, stack.length, "model.d_model", x)
        if self.spec.is_switch_layer(stack.name, index):
            out = self.switch(stack, index, normed)
        else:
            model = self.spec.model
            out = self.tokenwise(
                ops.DenseFFN,
                f"{prefix}/ffn",
                layer,
                stack.length,
                "model.d_ff",
                normed,
                d_ff=model.d_ff,
                activation=model.ffn_activation,
                dropout_rate=self.dropout,
            )
        out = self.dropout_after(out, f"{prefix}/ffn_dropout", layer, stack.length)
        return self.tokenwise(ops.Residual, f"{prefix}/ffn_residual", layer, stack.length, stack.layers_path, x, out)

    def stack_routing(self, stack: _Stack) -> Routing:
        """Groups and capacity of this stack's Switch layers, from the tokens each device holds."""
        found = self.routing.get(stack.name)
        if found is not None:
            return found
        moe = self.spec.moe
        assert moe is not None
        tokens = TensorType((ops.batch_dim(self.batch), ops.length_dim(stack.length)), "int32")
        batch_axes, length_axes = resolve_axes(tokens.dims, self.mesh)
        length_shards = self.mesh.size(length_axes)
        if stack.length % length_shards:
            raise UserError.at(
                self.span("mesh.rules.length"),
                f"{stack.name} length {stack.length} is not divisible by the {length_shards} shards of "
                f"mesh axes {', '.join(length_axes)}",
                "split the length over fewer devices, or choose lengths that divide evenly",
            )
        on_device = self.batch // self.mesh.size(batch_axes) * (stack.length // length_shards)
        found = routing(
            on_device, moe.group_size, moe.num_experts, moe.top_k, moe.capacity_factor.train, moe.min_capacity
        )
        self.routing[stack.name] = found
        return found

    def switch(self, stack: _Stack, index: int, x: str) -> str:
        moe = self.spec.moe
        assert moe is not None
        model = self.spec.model
        plan = self.stack_routing(stack)
        shards = self.batch * stack.length // plan.tokens_on_device  # devices that split the tokens
        groups = plan.groups_per_device * shards
        prefix = f"{stack.name}/{index}"
        layer = f"{stack.name}.{index}"
        experts_span = self.span("moe.num_experts")
        capacity_span = self.span("moe.capacity_factor")
        routed: _RoutedFields = {
            "layer": layer,
            "in_block": True,
            "groups": groups,
            "group_tokens": plan.tokens_per_group,
            "d_model": self.d_model,
            "num_experts": moe.num_experts,
            "dtype": self.dtype,
        }
        grouped = self.tokenwise(
            ops.Group,
            f"{prefix}/group",
            layer,
            stack.length,
            "moe.group_size",
            x,
            groups=groups,
            group_tokens=plan.tokens_per_group,
        )
        logits = self.add(
            ops.Router(
                name=f"{prefix}/router",
                span=experts_span,
                router_dtype=moe.router_dtype,
                jitter_eps=moe.jitter_eps,
                **routed,
            ),
            grouped,
        )
        slots = self.add(
            ops.Dispatch(
                name=f"{prefix}/dispatch", span=capacity_span, capacity=plan.capacity, top_k=moe.top_k, **routed
            ),
            grouped,
            logits,
        )
        expert_out = self.add(
            ops.ExpertFFN(
                name=f"{prefix}/experts",
                layer=layer,
                span=experts_span,
                in_block=True,
                groups=groups,
                num_experts=moe.num_experts,
                capacity=plan.capacity,
                d_model=self.d_model,
                d_ff=model.d_ff,
                activation=model.ffn_activation,
                dtype=self.dtype,
                top_k=moe.top_k,
                group_tokens=plan.tokens_per_group,
                dropout_rate=moe.expert_dropout_rate,
            ),
            slots,
        )
        combined = self.add(
            ops.Combine(
                name=f"{prefix}/combine", span=capacity_span, capacity=plan.capacity, top_k=moe.top_k, **routed
            ),
            expert_out,
            logits,
        )
        aux = ops.AuxLoss(
            name=f"{prefix}/aux_loss", span=self.span("moe.aux_loss_coef"), coef=moe.aux_loss_coef, **routed
        )
        self.aux_losses.append(self.add(aux, logits))
        if moe.z_loss_coef > 0:
            z = ops.RouterZLoss(
                name=f"{prefix}/z_loss", span=self.span("moe.z_loss_coef"), coef=moe.z_loss_coef, **routed
            )
            self.aux_losses.append(self.add(z, logits))
        return self.tokenwise(
            ops.Ungroup,
            f"{prefix}/ungroup",
            layer,
            stack.length,
            "moe.group_size",
            combined,
            groups=groups,
            group_tokens=plan.tokens_per_group,
        )

    def embed(self, stack: _Stack, ids: str) -> str:
        layer = f"{stack.name}.embed"
        op = ops.Embed(
            name=f"{stack.name}/embed",
            layer=layer,
            span=self.span("model.vocab_size"),
            batch=self.batch,
            length=stack.length,
            vocab=self.spec.model.vocab_size,
            d_model=self.d_model,
            dtype=self.dtype,
            table=SHARED_EMBEDDING,
        )
        x = self.add(op, ids)
        return self.dropout_after(x, f"{stack.name}/embed_dropout", layer, stack.length)

    def position_bias(self, stack: _Stack) -> str:
        model = self.spec.model
        op = ops.RelativeBias(
            name=f"{stack.name}/position_bias",
            layer=f"{stack.name}.embed",
            span=self.span("model.relative_attention_num_buckets"),
            buckets=model.relative_attention_num_buckets,
            heads=model.num_heads,
            length=stack.length,
            kv_length=stack.length,
            bidirectional=stack.name == "encoder",
            dtype=self.dtype,
        )
        return self.add(op)

    def final_norm(self, stack: _Stack, x: str) -> str:
        layer = f"{stack.name}.final"
        x = self.tokenwise(ops.RMSNorm, f"{stack.name}/final_norm", layer, stack.length, "model.d_model", x)
        return self.dropout_after(x, f"{stack.name}/final_dropout", layer, stack.length)

    # ---- the model ---------------------------------------------------------------------------

    def build(self) -> Graph:
        model, train = self.spec.model, self.spec.train
        encoder = _Stack("encoder", model.encoder_layers, train.inputs_length, "model.encoder_layers")
        decoder = _Stack("decoder", model.decoder_layers, train.targets_length, "model.decoder_layers")
        inputs = self.add(
            ops.Input(
                name="inputs",
                layer="encoder.embed",
                span=self.span("train.inputs_length"),
                source="inputs",
                batch=self.batch,
                length=encoder.length,
            )
        )
        x = self.embed(encoder, inputs)
        bias = self.position_bias(encoder)
        for index in range(encoder.layers):
            x = self.attention(encoder, index, x, bias, cross=False)
            x = self.ffn(encoder, index, x)
        memory = self.final_norm(encoder, x)

        # The decoder reads the targets shifted right; the shift costs nothing and keeps shapes.
        targets = self.add(
            ops.Input(
                name="targets",
                layer="decoder.embed",
                span=self.span("train.targets_length"),
                source="targets",
                batch=self.batch,
                length=decoder.length,
            )
        )
        y = self.embed(decoder, targets)
        bias = self.position_bias(decoder)
        for index in range(decoder.layers):
            y = self.attention(decoder, index, y, bias, cross=False)
            y = self.attention(decoder, index, y, memory, cross=True)
            y = self.ffn(decoder, index, y)
        y = self.final_norm(decoder, y)

        logits = ops.Logits(
            name="decoder/logits",
            layer="head",
            span=self.span("model.tie_embeddings"),
            batch=self.batch,
            length=decoder.length,
            d_model=self.d_model,
            vocab=model.vocab_size,
            dtype=self.dtype,
            tied=model.tie_embeddings,
            table=SHARED_EMBEDDING,
        )
        scores = self.add(logits, y)
        entropy = ops.CrossEntropy(
            name="decoder/cross_entropy",
            layer="head",
            span=self.span("model.vocab_size"),
            batch=self.batch,
            length=decoder.length,
            vocab=model.vocab_size,
            dtype=self.dtype,
        )
        token_loss = self.add(entropy, scores, targets)
        loss = ops.Loss(
            name="loss",
            layer="head",
            span=self.span("train"),
            batch=self.batch,
            length=decoder.length,
            aux_terms=len(self.aux_losses),
        )
        total = self.add(loss, token_loss, *self.aux_losses)
        self.add(ops.Output(name="output", layer="head", span=self.span("train")), total)
        self.graph.graph["info"] = GraphInfo(
            name=self.spec.name,
            model=self.spec.model,
            moe=self.spec.moe,
            train=self.spec.train,
            mesh=self.mesh,
            mesh_spans=_mesh_spans(self.spec),
            start=self.spec.origin.source.start(),
            routing=dict(self.routing),
        )
        return self.graph


def _is_block(layer: str) -> bool:
    """Layers "encoder.3" and "decoder.0" are Transformer blocks; "encoder.embed", "head" are not."""
    return layer.rsplit(".", 1)[-1].isdigit()


def _mesh_spans(spec: Spec) -> dict[str, Span]:
    spans = {"axes": spec.span("mesh.axes")}
    for axis in spec.mesh.axes:
        spans[f"axes.{axis}"] = spec.span(f"mesh.axes.{axis}")
    for logical in spec.mesh.logical_rules():
        path = f"mesh.rules.{logical}"
        if not spec.is_default(path):
            spans[f"rules.{logical}"] = spec.span(path)
    return spans


def mesh_of(spec: Spec) -> Mesh:
    return Mesh.of(spec.mesh.axes, spec.mesh.logical_rules())


def build_graph(spec: Spec) -> Graph:
    """The unsharded IR graph of `spec` (run switchc.passes.shard to place it on the mesh)."""
    return _Builder(spec, mesh_of(spec)).build()
