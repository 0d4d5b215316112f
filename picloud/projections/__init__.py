"""Projections: the read model folded from the event log, its runner, rebuild and queries."""

from picloud.projections.queries import (
    Invocation,
    Schedule,
    Script,
    ScriptStats,
    ScriptVersion,
    get_invocation,
    get_schedule,
    get_script,
    get_version,
    list_invocations,
    list_schedules,
    list_scripts,
    list_versions,
    script_stats,
)
from picloud.projections.runner import Projector, RebuildResult, lag, project_batch, rebuild

__all__ = [
    "Invocation",
    "Projector",
    "RebuildResult",
    "Schedule",
    "Script",
    "ScriptStats",
    "ScriptVersion",
    "get_invocation",
    "get_schedule",
    "get_script",
    "get_version",
    "lag",
    "list_invocations",
    "list_schedules",
    "list_scripts",
    "list_versions",
    "project_batch",
    "rebuild",
    "script_stats",
]
