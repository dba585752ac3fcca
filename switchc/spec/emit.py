"""Spec -> YAML text: the resolved spec written beside generated programs (and by `switchc fmt`).

Every key is written, defaults included, in schema order, so the file says exactly what the
program was built from and loads back into an equal Spec.
"""

from __future__ import annotations

from typing import Any

import yaml

from switchc.spec.schema import SPEC_VERSION
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


def to_yaml(spec: Spec, header: str | None = None) -> str:
    """The whole resolved spec as YAML, with an optional comment header."""
    top = header or f"{spec.name}: resolved spec (format v{SPEC_VERSION}); every key, defaults included"
    body = yaml.dump(spec.to_dict(), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)
    return f"# {top}\n{body}"
