"""`switchc check`, `switchc explain`, `switchc schema`: the spec itself."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from switchc.backends.common.program import check_data
from switchc.cli.options import check_output_parent, example, overrides, say, table_console
from switchc.errors import PlainUserError, UserError
from switchc.files import write_output
from switchc.spec import Spec, load_spec
from switchc.spec.load import OVERRIDE_SOURCE_NAME
from switchc.spec.schema import STACKS, field_docs, json_schema


def summary(spec: Spec) -> str:
    """One line saying what the spec is: dense or Switch, shape, mesh."""
    model = spec.model
    shape = (
        f"d_model {model.d_model}, d_ff {model.d_ff}, {model.num_heads} head{'s' if model.num_heads != 1 else ''}, "
        f"{model.encoder_layers}+{model.decoder_layers} blocks, {model.ffn_activation}"
    )
    if spec.moe is None:
        kind = "dense T5"
    else:
        moe = spec.moe
        routing = "Switch (top-1)" if moe.top_k == 1 else f"MoE (top-{moe.top_k})"
        if all(spec.layout.placement(stack) is None for stack in STACKS):
            every = moe.expert_every
            where = "every FFN block" if every == 1 else f"every {_ordinal(every)} FFN block"
        else:  # a layout places them: say where, stack by stack
            where = ", ".join(
                f"{stack} blocks {list(spec.switch_blocks(stack))}"
                if spec.switch_blocks(stack)
                else f"no {stack} block"
                for stack in STACKS
            )
        kind = f"{routing}, {moe.num_experts} expert{'s' if moe.num_experts != 1 else ''} in {where}"
    devices = spec.mesh.num_devices
    placed = f"mesh {spec.mesh.shape}" if spec.mesh.axes else "no mesh axes"  # `axes {}`: one device
    return f"{kind}; {shape}; {placed} ({devices} device{'s' if devices > 1 else ''})"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@click.command(epilog=example("switchc check specs/*.yaml", "switchc check switch-tiny --set moe.num_experts=16"))
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@overrides
def check(specs: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Validate specs: exit 0 when all are valid, 2 when any is not (errors go to stderr)."""
    failed = 0
    for name in specs:
        try:
            spec = load_spec(name, overrides)
            check_data(spec)  # what the programs' data pipeline needs of the shapes (compile checks it too)
        except (UserError, PlainUserError) as err:
            say(err.render())
            failed += 1
            continue
        say(f"ok  {name}: {summary(spec)}", err=False)
    if failed:
        say(f"{failed} of {len(specs)} spec(s) invalid")
        raise SystemExit(2)


def warn_unless_compilable(spec: Spec, then: str) -> tuple[str, ...]:
    """What check and compile refuse of a spec that loads (the programs' data pipeline needs more of
    its shapes than the cost model does), as located warnings on stderr; `then` says what the
    command does with the spec all the same. Returns each warning as one line, for the report's
    notes (its JSON has no stderr)."""
    try:
        check_data(spec)
    except UserError as err:
        refused = f" (switchc compile and check refuse this spec; {then})"
        lines = []
        for diagnostic in err.diagnostics:
            warning = dataclasses.replace(diagnostic, message=diagnostic.message + refused, severity="warning")
            click.echo(warning.render(), err=True)
            parts = [f"{diagnostic.span}: {warning.message}"]
            parts += [f"{text.removesuffix(' here')} at {span}" for text, span in diagnostic.notes]
            lines.append("; ".join(parts + ([diagnostic.hint] if diagnostic.hint else [])))
        return tuple(lines)
    return ()


def _origin_label(spec: Spec, path: str) -> str:
    if path == "data.eval_fraction" and spec.is_default(path) and spec.data.eval_path is not None:
        return "data.eval_path"  # which sets it to 0 (spec/load.py)
    if spec.is_default(path):
        return "default"
    span = spec.span(path)
    if span.source.name == OVERRIDE_SOURCE_NAME:
        return "--set"
    return f"line {span.line}"


def explain_rows(spec: Spec) -> list[dict[str, Any]]:
    """Every resolved key with its value, whether it was defaulted, and what it means."""
    docs = field_docs()
    rows = []
    for path, value in spec.leaves():
        rows.append(
            {
                "key": path,
                "value": value,
                "default": spec.is_default(path),
                "from": _origin_label(spec, path),
                "description": docs.get(path, ""),
            }
        )
    if spec.moe is not None:  # the effective sharding, not only what the spec wrote
        rules = spec.mesh.logical_rules()
        rows.append(
            {
                "key": "mesh.rules (resolved)",
                "value": {axis: list(mesh_axes) for axis, mesh_axes in rules.items() if mesh_axes},
                "default": False,
                "from": "derived",
                "description": "Standard rules for the axes present, then the spec's own.",
            }
        )
    return rows


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


@click.command(epilog=example("switchc explain specs/switch-base.yaml", "switchc explain switch-tiny --format json"))
@click.argument("spec", metavar="SPEC")
@overrides
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def explain(spec: str, overrides: tuple[str, ...], fmt: str) -> None:
    """Print the resolved spec: every key, its value, and whether it came from the file or a default."""
    resolved = load_spec(spec, overrides)
    warn_unless_compilable(resolved, "its settings follow")
    rows = explain_rows(resolved)
    if fmt == "json":
        payload = {"name": resolved.name, "summary": summary(resolved), "keys": rows}
        click.echo(json.dumps(payload, indent=2))
        return
    table = Table(title=escape(f"{resolved.name}: {summary(resolved)}"), title_justify="left", expand=False)
    table.add_column("key", no_wrap=True)
    table.add_column("value", no_wrap=True)
    table.add_column("from", no_wrap=True)
    table.add_column("meaning")
    for row in rows:
        style = "dim" if row["default"] else ""
        cells = (row["key"], _show(row["value"]), row["from"], row["description"])
        table.add_row(*map(escape, cells), style=style)  # values are the user's text, not rich markup
    table_console(160).print(table)  # piped: the descriptions not squeezed into 80 columns


@click.command(epilog=example("switchc schema -o switchc-spec.schema.json"))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
def schema(output: Path | None) -> None:
    """Write the JSON Schema of the spec format (point your editor's YAML plugin at it)."""
    text = json.dumps(json_schema(), indent=2) + "\n"
    if output is None or str(output) == "-":  # `-o -`: stdout, as is the custom
        click.echo(text, nl=False)
        return
    check_output_parent(output)
    write_output(output, text)
    click.echo(f"wrote {output}", err=True)


COMMANDS = (check, explain, schema)
