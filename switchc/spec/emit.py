"""Spec -> YAML text: the resolved spec written beside generated programs (`switchc fmt` uses printer.py).

Every key is written, defaults included, in schema order, so the file says exactly what the
program was built from and loads back into an equal Spec (one exception, the same model: a
--set layout that overrides the file's moe.expert_every, see `consistent_dict`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import yaml

from switchc.spec.schema import SPEC_VERSION, STACKS, MoEConfig, every_blocks, placement_blocks
from switchc.spec.spec import Spec


class _Dumper(yaml.SafeDumper):
    """Block style for sections, flow style for short maps and lists (mesh axes, rules)."""


def _represent_dict(dumper: yaml.SafeDumper, data: dict[str, Any]) -> yaml.Node:
    flow = all(not isinstance(v, dict) for v in data.values()) and len(data) <= 4
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


_Dumper.add_representer(dict, _represent_dict)
_Dumper.add_representer(list, _represent_list)


def consistent_dict(spec: Spec) -> dict[str, Any]:
    """`spec.to_dict()` that loads back without contradicting itself.

    moe.expert_every may disagree with a layout when it took its default (then it is left out:
    the default comes back) or when a --set layout overrides the file's value (then every stack
    gets its placement written out and expert_every is left out: the same model comes back).
    """
    data = spec.to_dict()
    if spec.moe is None or spec.expert_every_agrees():
        return data
    every = data["moe"].pop("expert_every")
    if every != MoEConfig().expert_every:
        for stack in STACKS:
            if data["layout"][stack] is None:
                data["layout"][stack] = {"switch": f"every {every}"}
    return data


def escape_unprintable(text: str) -> str:
    """`text` with each character that is not printable (a line break, a control character) written
    as its Python escape: a file name quoted in a comment or a docstring of generated text."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def to_yaml(spec: Spec, header: str | None = None) -> str:
    """The whole resolved spec as YAML (see `consistent_dict`), with an optional comment header. The
    spec's name (its file's) is escaped: a line break in it would end the comment."""
    top = (
        header
        or f"{escape_unprintable(spec.name)}: resolved spec (format v{SPEC_VERSION}); every key, defaults included"
    )
    body = yaml.dump(consistent_dict(spec), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)
    return f"# {top}\n{body}"


def same_model_form(data: dict[str, Any]) -> dict[str, Any]:
    """`data`, a resolved spec as plain data (`to_yaml`'s, loaded), with every layout stack that
    only restates moe.expert_every (in a dense model: that has no Switch block) left out (null), so
    that two specs of one model compare equal however they place their Switch layers: a `.switch`
    file's encoder blocks and its YAML twin's `expert_every: 2` (`differences`, `spec_digest`)."""
    moe, layout, model = data.get("moe"), data.get("layout"), data.get("model")
    if not (isinstance(layout, dict) and isinstance(model, dict)):
        return data
    every = moe.get("expert_every", MoEConfig().expert_every) if isinstance(moe, dict) else None
    for stack in STACKS:
        written, depth = layout.get(stack), model.get(f"{stack}_layers")
        if not (isinstance(written, dict) and isinstance(depth, int)):
            continue
        switch = written.get("switch")
        placement = tuple(switch) if isinstance(switch, list) else switch
        if not isinstance(placement, (str, tuple)):
            continue
        implied = () if every is None else every_blocks(every, depth)  # a dense model: no Switch block
        if placement_blocks(placement, depth) == implied:
            layout[stack] = None
    return data


# Settings whose value is a mapping of the user's names (mesh axes, logical-axis rules): a change is
# one entry with both mappings, not one per name ("mesh.axes.data: 2 in the run, null now").
# (backends/common/flags.py, copied into every program and importing nothing of switchc, has its own.)
WHOLE_MAPPINGS = ("mesh.axes", "mesh.rules")


def _differences(old: object, new: object, key: str = "") -> Iterator[tuple[str, object, object]]:
    """(dotted key, old, new) for every setting that differs; a section null on one side is one entry."""
    if isinstance(old, dict) and isinstance(new, dict) and key not in WHOLE_MAPPINGS:
        for name in [*old, *(name for name in new if name not in old)]:  # the spec's own order
            yield from _differences(old.get(name), new.get(name), f"{key}.{name}" if key else str(name))
    elif old != new:
        yield key, old, new


def differences(written: str, spec: Spec) -> list[tuple[str, object, object]]:
    """Every setting in which `spec` differs from `written`, a resolved spec that `to_yaml` wrote
    (a program's spec.yaml): (dotted key, written value, spec's value), in the spec's order."""
    old, new = (same_model_form(yaml.safe_load(text)) for text in (written, to_yaml(spec)))
    return list(_differences(old, new))


def extendable(spec: Spec) -> tuple[str, ...]:
    """Settings that a resumed run may change and stay the same run: train.steps, as more steps
    continue it, unless the schedule is cosine, whose decay to zero spans train.steps (more steps
    make it another schedule)."""
    return () if spec.train.optimizer.schedule == "cosine" else ("train.steps",)


# Settings added after runs were first digested, left out of the digest while unset, so that a run
# started before one existed still resumes: (section, key).
DIGEST_OMITS_WHEN_NULL = (("data", "eval_path"),)

# Settings that change how a step is computed, not what it computes: a resumed run may change them
# and stay the same run (full remat after running out of memory). The digest hashes each at the
# value given here, which is its default, so digests made before they were exempt do not change.
HOW_NOT_WHAT = {"train.remat": "none"}


def spec_digest(spec: Spec) -> str:
    """The identity of the run a spec trains: a digest of its resolved settings without the
    `extendable` ones, and with HOW_NOT_WHAT's at their defaults. A generated program records it
    in every checkpoint and, on --resume, refuses a checkpoint that records another
    (docs/training.md)."""
    data = same_model_form(yaml.safe_load(to_yaml(spec)))
    for where, added in DIGEST_OMITS_WHEN_NULL:  # settings added later: unset, a spec keeps its old digest
        if data.get(where, {}).get(added, "set") is None:
            del data[where][added]
    for key, value in HOW_NOT_WHAT.items():
        where, name = key.split(".")
        if name in data.get(where, {}):
            data[where][name] = value
    for key in extendable(spec):
        *sections, name = key.split(".")
        section = data
        for part in sections:
            section = section[part]
        del section[name]
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
