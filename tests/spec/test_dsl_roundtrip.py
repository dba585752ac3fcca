"""`switchc fmt` is lossless: random valid specs survive YAML -> DSL -> YAML unchanged.

The specs are drawn as plain data (random subsets of keys, random valid values, layouts
included), written as YAML, and parsed; each one is then printed as DSL and as YAML, read back,
and compared: equal Specs, the same keys written, and texts that no longer change.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from switchc.errors import Source
from switchc.spec import Spec, parse_spec
from switchc.spec.checks import SHARED_TENSOR_AXES, TENSOR_PARALLEL_AXES, UNSPLIT_AXES
from switchc.spec.printer import format_spec
from switchc.spec.schema import LOGICAL_AXES, STANDARD_RULES
from switchc.spec.yamltree import Scalar, resolve_scalar

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)

# Printable text, including what needs quoting or escaping in either format.
TEXT = st.text(
    st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters="".join(map(chr, [*range(32), *range(127, 160), 0x2028, 0x2029])),
    ),
    max_size=20,
) | st.sampled_from(["0E0", "1.5", "null", "True", "~", "every 2", "a: b", "a #b", "-", "[1]", "'q'", '"dq"', "\\"])
IDENTIFIER = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True).filter(
    lambda s: s not in ("None", "True", "False", "and", "or", "not", "in", "is", "if", "as", "def", "for", "del")
)
FLOAT = st.sampled_from([0.5, 1, 1.25, 2.0, 3, 1e-06, 0.001, 12345.678, 1e16])
PROBABILITY = st.sampled_from([0.0, 0.1, 0.25, 0.5, 1e-3, 0])


def _some(draw: st.DrawFn, options: dict[str, Any]) -> dict[str, Any]:
    """A random subset of `options` (key -> strategy), drawn, in a random order."""
    keys = draw(st.permutations(list(options)))
    chosen = [k for k in keys if draw(st.booleans())]
    return {key: draw(options[key]) for key in chosen}


@st.composite
def spec_data(draw: st.DrawFn) -> dict[str, Any]:
    model = _some(
        draw,
        {
            "vocab_size": st.sampled_from([64, 512, 32128]),
            "d_model": st.sampled_from([64, 128]),
            "d_ff": st.sampled_from([128, 2048]),
            "d_kv": st.sampled_from([16, 64]),
            "num_heads": st.sampled_from([4, 8]),
            "encoder_layers": st.integers(1, 6),
            "decoder_layers": st.integers(1, 6),
            "ffn_activation": st.sampled_from(["relu", "gelu", "geglu", "swiglu"]),
            "tie_embeddings": st.booleans(),
            "dropout_rate": PROBABILITY,
            "dtype": st.sampled_from(["float32", "bfloat16"]),
            "layer_norm_epsilon": FLOAT,
        },
    )
    depth = {stack: model.get(f"{stack}_layers", 12) for stack in ("encoder", "decoder")}
    data: dict[str, Any] = {}
    if draw(st.booleans()):
        data["model"] = model
    else:
        depth = {"encoder": 12, "decoder": 12}
    dense = draw(st.booleans())
    layout: dict[str, Any] = {}
    for stack in draw(st.sampled_from([(), ("encoder",), ("decoder",), ("encoder", "decoder")])):
        if dense:
            layout[stack] = {"switch": []}
        elif draw(st.booleans()):
            layout[stack] = {"switch": f"every {draw(st.integers(1, depth[stack]))}"}
        else:
            blocks = draw(st.sets(st.integers(0, depth[stack] - 1)))
            layout[stack] = {"switch": sorted(blocks)}
    if not dense:
        moe = _some(
            draw,
            {
                "num_experts": st.sampled_from([4, 8, 128]),
                "top_k": st.sampled_from([1, 2]),
                "capacity_factor": st.fixed_dictionaries({}, optional={"train": FLOAT, "eval": FLOAT}),
                "min_capacity": st.integers(0, 8),
                "group_size": st.sampled_from([64, 4096]),
                "batch_prioritized_routing": st.booleans(),
                "aux_loss_coef": FLOAT,
                "jitter_eps": PROBABILITY,
                "router_dtype": st.sampled_from(["float32", "bfloat16"]),
            },
        )
        if not layout and draw(st.booleans()):
            moe["expert_every"] = draw(st.integers(1, min(depth.values())))
        data["moe"] = moe
        # a moe section needs some Switch layer: the stacks the layout leaves out have expert_every 2
        has_switch = any(
            (isinstance(p["switch"], str) and int(p["switch"].split()[1]) <= depth[s]) or p["switch"]
            for s, p in layout.items()
        ) or any(s not in layout and depth[s] >= moe.get("expert_every", 2) for s in depth)
        if not has_switch:
            layout["decoder"] = {"switch": [0]}
    elif draw(st.booleans()):
        data["moe"] = None
    if layout or draw(st.booleans()):
        data["layout"] = layout
    axes = draw(st.sampled_from([{"data": 1}, {"data": 2}, {"data": 2, "expert": 2}, {"expert": 2, "model": 2}]))
    mesh: dict[str, Any] = {}
    if draw(st.booleans()):
        mesh["axes"] = axes
    else:
        axes = {"data": 1}
    if draw(st.booleans()):
        names = list(axes)
        mesh["rules"] = {
            axis: draw(st.sampled_from([None, names[0], names[-1:]]))
            for axis in draw(st.lists(st.sampled_from(LOGICAL_AXES), unique=True, max_size=3))
        }
        # every axis of more than one device must split something (checks._check_rules)
        split = {axis for name, axes in STANDARD_RULES.items() if name not in mesh["rules"] for axis in axes}
        split |= {axis for axes in mesh["rules"].values() for axis in ([axes] if isinstance(axes, str) else axes or [])}
        assume(all(size == 1 or axis in split for axis, size in axes.items()))
        # nor may one mesh axis split two dims of one weight tensor (checks._check_shared_mesh_axes)
        rules = {**STANDARD_RULES, **{k: ([v] if isinstance(v, str) else v or []) for k, v in mesh["rules"].items()}}
        assume(
            not any(
                axes.get(axis, 1) > 1 and axis in rules.get(second, ())
                for first, second in map(sorted, SHARED_TENSOR_AXES)
                for axis in rules.get(first, ())
            )
        )
        # nor split embed, kv or length (checks._check_unsplit_axes)
        assume(not any(axes.get(axis, 1) > 1 for name in UNSPLIT_AXES for axis in rules.get(name, ())))
        # nor the experts over an axis that does not split the batch
        assume(all(axes.get(axis, 1) == 1 or axis in rules.get("batch", ()) for axis in rules.get("experts", ())))
        # nor one axis split heads, mlp or vocab and also the batch or the experts
        assume(
            not any(
                axes.get(axis, 1) > 1 and any(axis in rules.get(token, ()) for token in ("batch", "experts"))
                for name in TENSOR_PARALLEL_AXES
                for axis in rules.get(name, ())
            )
        )
    if mesh:
        data["mesh"] = mesh
    train = _some(
        draw,
        {
            "batch_size": st.sampled_from([8, 32]),
            "steps": st.integers(1, 100000),
            "optimizer": st.fixed_dictionaries(
                {},
                optional={
                    "name": st.sampled_from(["adam", "adafactor"]),
                    "learning_rate": FLOAT,
                    "beta1": st.one_of(st.none(), PROBABILITY),
                    "warmup_steps": st.integers(0, 100),
                },
            ),
            "remat": st.sampled_from(["none", "full"]),
            "seed": st.integers(0, 2**24),
        },
    )
    if train:
        data["train"] = train
    source = draw(st.sampled_from(["shakespeare", "text", "jsonl", None]))
    if source is not None:
        data["data"] = {"source": source}
        if source != "shakespeare":
            data["data"]["path"] = draw(TEXT)
        if source == "jsonl":
            data["data"]["jsonl_field"] = draw(TEXT.filter(bool))  # any JSON key but ""
    return data


class _Dumper(yaml.SafeDumper):
    """PyYAML writes YAML 1.1: `0E0` stays plain there but is a number under the 1.2 rules specs use."""


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    plain = resolve_scalar(Scalar(text, True, Source("", "").start())) == text
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=None if plain else '"')


_Dumper.add_representer(str, _text)


def as_yaml(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True) or "model: {}\n"


def written(spec: Spec) -> set[str]:
    """Paths the source wrote, less an empty layout or a null stack in it (the DSL writes only stacks),
    an empty model section, and list items (a rule written `batch: data` is printed as the list it means, `[data]`)."""
    paths = {p for p in spec.origin.value_spans if not p.rsplit(".", 1)[-1].isdigit()}  # list items aside
    if not any(p.startswith("model.") for p in paths):  # `model {}`: what the DSL writes for a spec of defaults
        paths.discard("model")
    if not any(spec.layout.placement(stack) for stack in ("encoder", "decoder")):
        paths.discard("layout")
    return {p for p in paths if not p.startswith("layout.") or spec.layout.placement(p.split(".")[1]) is not None}


def load(text: str, name: str) -> Spec:
    return parse_spec(Source(name, text))


@SETTINGS
@given(spec_data())
def test_yaml_to_dsl_to_yaml_is_lossless(data: dict[str, Any]) -> None:
    original = load(as_yaml(data), "random.yaml")

    dsl = format_spec(original, "dsl")
    from_dsl = load(dsl, "random.switch")
    assert from_dsl == original, dsl
    # blocks write model.<stack>_layers (and the model section that holds it)
    blocks = {f"model.{s}_layers" for s in ("encoder", "decoder") if isinstance(original.layout.placement(s), tuple)}
    if blocks:
        blocks.add("model")
    assert written(from_dsl) - blocks == written(original) - blocks, dsl

    yaml_text = format_spec(from_dsl, "yaml")
    from_yaml = load(yaml_text, "again.yaml")
    assert from_yaml == original, yaml_text

    # formatting is stable: a second conversion and a second pretty-print change nothing
    assert format_spec(from_yaml, "dsl") == dsl
    assert format_spec(load(format_spec(original, "yaml"), "x.yaml"), "yaml") == format_spec(original, "yaml")
    assert format_spec(from_dsl, "dsl") == dsl


@SETTINGS
@given(spec_data())
def test_every_key_printed_reads_back_equal(data: dict[str, Any]) -> None:
    original = load(as_yaml(data), "random.yaml")
    for to, name in (("dsl", "all.switch"), ("yaml", "all.yaml")):
        text = format_spec(original, to, all_keys=True)
        assert load(text, name) == original, text


def test_yaml_floats_read_as_numbers_in_yaml_1_1_readers_too() -> None:
    """PyYAML's safe_load (YAML 1.1) reads 1e-6 as text; fmt --to yaml wrote it so."""
    dsl = "model {\n  layer_norm_epsilon = 1e-6\n}\ntrain {\n  optimizer { learning_rate = 1e20 }\n}\n"
    text = format_spec(load(dsl, "tiny.switch"), "yaml")
    assert "layer_norm_epsilon: 1.0e-6" in text and "learning_rate: 1.0e+20" in text
    read = yaml.safe_load(text)
    assert read["model"]["layer_norm_epsilon"] == 1e-6 and read["train"]["optimizer"]["learning_rate"] == 1e20
    assert format_spec(load(text, "tiny.yaml"), "dsl") == format_spec(load(dsl, "tiny.switch"), "dsl")
