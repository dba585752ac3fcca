"""Hardware profiles: peak FLOP/s, memory, bandwidths and latency of one device and its links.

Built-in profiles live in hardware.yaml beside this file (datasheet numbers, each with its
source). Users add their own with `--hardware-file FILE.yaml` in the same format: a mapping of
profile name -> fields. Files are read with the spec's located YAML reader, so a mistake points
at its line and column; a user profile with a built-in's name replaces the built-in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, Field, StrictFloat, StrictInt, TypeAdapter, ValidationError, with_config

from switchc.errors import Diagnostic, PlainUserError, Source, UserError, did_you_mean
from switchc.files import read_text
from switchc.spec import yamltree

PositiveNumber = Annotated[StrictFloat | StrictInt, Field(gt=0, allow_inf_nan=False)]
ProfileName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True)
class PeakFlops:
    """Peak dense matmul FLOP/s of one device, per dtype."""

    bfloat16: PositiveNumber
    float32: PositiveNumber


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True)
class Network:
    """The links between nodes, for devices grouped in nodes (GPUs: NVLink inside, a network out)."""

    devices_per_node: Annotated[StrictInt, Field(gt=0)]
    bandwidth: PositiveNumber  # bytes/s one device sends off its node, one direction
    latency: PositiveNumber  # seconds per collective step between nodes


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True)
class HardwareProfile:
    """One device and its links. Bandwidths are bytes per second, one direction, per device."""

    description: Annotated[str, Field(max_length=200)]
    source: Annotated[str, Field(max_length=400)]
    peak_flops: PeakFlops
    memory_bytes: PositiveNumber  # device memory (HBM) capacity
    interconnect_bandwidth: PositiveNumber  # what one device can send to its collective peers
    latency: PositiveNumber  # seconds per step of a collective (a ring hop, an all-to-all round)
    # HBM bytes/s, for reference: the step time times compute at --mfu and communication, not memory traffic
    memory_bandwidth: PositiveNumber | None = None
    # Between nodes; None: every device reaches every other at interconnect_bandwidth (a TPU pod's ICI).
    network: Network | None = None

    def peak(self, dtype: str) -> float:
        return float(self.peak_flops.bfloat16 if dtype == "bfloat16" else self.peak_flops.float32)


@dataclass(frozen=True)
class Hardware:
    """A named profile."""

    name: str
    profile: HardwareProfile


_ADAPTER: TypeAdapter[dict[str, HardwareProfile]] = TypeAdapter(dict[ProfileName, HardwareProfile])
BUILTIN_FILE = "hardware.yaml"
DEFAULT_HARDWARE = "tpuv3"  # the paper trained on TPUv3 (Table 1)


def parse_profiles(source: Source) -> dict[str, Hardware]:
    """Profiles from YAML text; every mistake is a located UserError."""
    tree = yamltree.parse(source, what="hardware file")
    if tree is None:
        raise UserError.at(source.start(), "the hardware file is empty", "write 'name: {peak_flops: ..., ...}'")
    if not isinstance(tree, yamltree.Mapping):
        raise UserError.at(tree.span, "a hardware file is a mapping of profile names to profiles")
    try:
        found = _ADAPTER.validate_python(yamltree.to_python(tree))
    except ValidationError as err:
        errors = _misspelled_only(err.errors())
        # One message per place: a union reports each of its members' failures.
        unique = {d.render(): d for d in (_diagnostic(tree, e) for e in errors)}
        problems = list(unique.values())
        problems.sort(key=lambda d: (d.span.line, d.span.column))
        raise UserError(problems) from None
    return {name: Hardware(name, profile) for name, profile in found.items()}


_FIELDS = [
    "description",
    "source",
    "peak_flops",
    "memory_bytes",
    "memory_bandwidth",
    "interconnect_bandwidth",
    "latency",
    "network",
]
_UNITS = "sizes are bytes, bandwidths bytes per second, latencies seconds, peak_flops FLOP/s: all > 0"
_OPTIONAL = ("memory_bandwidth", "network")  # HardwareProfile fields with a default
_NESTED = {"peak_flops": ["bfloat16", "float32"], "network": ["devices_per_node", "bandwidth", "latency"]}


def _choices(loc: tuple[Any, ...]) -> list[str]:
    """The keys that may stand at `loc` (a profile's, or its peak_flops' or network's)."""
    return _NESTED.get(str(loc[1]), _FIELDS) if len(loc) == 3 else _FIELDS


def _misspelled_only(errors: list[Any]) -> list[Any]:
    """pydantic's errors without a missing key whose place holds an unknown key close to its name:
    that is one mistake (a misspelling), which the unknown key's 'did you mean' names."""
    unknown = [e["loc"] for e in errors if e["type"] in ("extra_forbidden", "unexpected_keyword_argument")]
    meant = {(loc[:-1], close) for loc in unknown for close in get_close_matches(str(loc[-1]), _choices(loc), 1, 0.6)}
    return [
        e
        for e in errors
        if not (e["type"] in ("missing", "missing_argument") and (e["loc"][:-1], e["loc"][-1]) in meant)
    ]


def _diagnostic(tree: yamltree.Mapping, error: Any) -> Diagnostic:
    # Union members ("float", "int") name themselves in the location; they are not keys.
    loc = tuple(p for p in error["loc"] if p not in ("[key]", "float", "int"))
    node, key = yamltree.find(tree, loc)
    span = node.span if node is not None else yamltree.nearest(tree, loc)
    dotted = ".".join(str(p) for p in loc)
    parent = ".".join(str(p) for p in loc[:-1])
    kind = error["type"]
    choices = _choices(loc)
    union = len(loc) < len(error["loc"])  # a number field: float or int
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        hint = did_you_mean(str(loc[-1]), choices) or f"keys here: {', '.join(choices)}"
        return Diagnostic(f"unknown key '{loc[-1]}' in {parent}", key.span if key else span, hint)
    if kind in ("missing", "missing_argument"):
        _, owner = yamltree.find(tree, loc[:-1])
        needed = [name for name in choices if name not in _OPTIONAL]
        left = [name for name in choices if name in _OPTIONAL]
        optional = f"; optional: {', '.join(left)}" if left else ""
        return Diagnostic(
            f"{parent}: missing '{loc[-1]}'",
            owner.span if owner else span,
            f"set all of: {', '.join(needed)}{optional}",
        )
    if kind == "greater_than" and error["input"] == error["input"]:  # nan is not greater, nor finite
        return Diagnostic(f"{dotted}: must be > 0", span, _UNITS)
    if kind in ("greater_than", "finite_number"):
        return Diagnostic(f"{dotted}: must be a finite number", span, _UNITS)
    if kind == "int_type" and not union:
        return Diagnostic(f"{dotted}: expected a whole number", span, "write it plainly, e.g. 8")
    if kind in ("float_type", "int_type"):
        return Diagnostic(f"{dotted}: expected a number", span, "write it plainly, e.g. 1.5e12 (no '_' between digits)")
    if kind == "string_type":
        return Diagnostic(f"{dotted}: expected text", span, f"quote it, e.g. {loc[-1]}: '{error['input']}'")
    if kind == "string_pattern_mismatch":
        hint = "letters, digits, '.', '_', '-'"
        return Diagnostic(f"'{loc[0]}' is not a valid profile name", key.span if key else span, hint)
    if kind in ("dataclass_type", "dataclass_args_type", "dict_type"):
        return Diagnostic(f"{dotted or 'the file'}: expected a mapping", span)
    return Diagnostic(f"{dotted}: {error['msg']}", span)


@cache
def builtin_profiles() -> dict[str, Hardware]:
    text = (resources.files("switchc.analysis") / BUILTIN_FILE).read_text(encoding="utf-8")
    return parse_profiles(Source(f"<builtin>/{BUILTIN_FILE}", text))


def load_profiles(files: Sequence[str] = ()) -> dict[str, Hardware]:
    """Built-in profiles, then each file's (a later name replaces an earlier one)."""
    profiles = dict(builtin_profiles())
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise PlainUserError(
                f"no such hardware file: {file}", "pass a YAML file of profiles (see `switchc report --help`)"
            )
        profiles.update(parse_profiles(Source(str(path), read_text(path))))
    return profiles


def hardware(name: str, files: Sequence[str] | None = ()) -> Hardware:
    """The profile called `name` among the built-ins and `files`; None: the built-ins only, where
    no profile file can be given (switchc train: the programs know the built-in profiles)."""
    profiles = load_profiles(files or ())
    found = profiles.get(name) or profiles.get(name.lower())
    if found is None:
        own = "" if files is None else "; a profile of your own: --hardware-file FILE (docs/cost-model.md)"
        hint = did_you_mean(name, profiles) or f"profiles: {', '.join(sorted(profiles))}{own}"
        raise PlainUserError(f"unknown hardware profile '{name}'", hint)
    return found
