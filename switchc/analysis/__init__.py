"""Analyses of a sharded IR graph: parameters, FLOPs, memory, communication, step time, report.

    from switchc.analysis import hardware, report_for
    report = report_for(load_spec("specs/switch-base.yaml"), hardware("tpuv3"))

Each analysis is a pure function of the graph with one rule per op kind, in a table; an op kind
without a rule is an error that names the op and its spec span (MissingRuleError).
"""

from switchc.analysis.common import MissingRuleError
from switchc.analysis.hardware import (
    DEFAULT_HARDWARE,
    Hardware,
    HardwareProfile,
    builtin_profiles,
    hardware,
    load_profiles,
)
from switchc.analysis.report import REPORT_VERSION, Report, analyse, plot, report_for, rich_table, to_markdown
from switchc.analysis.step_time import DEFAULT_MFU

__all__ = [
    "DEFAULT_HARDWARE",
    "DEFAULT_MFU",
    "REPORT_VERSION",
    "Hardware",
    "HardwareProfile",
    "MissingRuleError",
    "Report",
    "analyse",
    "builtin_profiles",
    "hardware",
    "load_profiles",
    "plot",
    "report_for",
    "rich_table",
    "to_markdown",
]
