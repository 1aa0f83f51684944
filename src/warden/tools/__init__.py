"""Tools: the decorator, tool definitions, and argument/output validation."""

from warden.tools._registry import ToolDef, ToolRegistry, make_tool, tool, tool_def_of
from warden.tools._schema import FieldError, SchemaViolation

__all__ = [
    "FieldError",
    "SchemaViolation",
    "ToolDef",
    "ToolRegistry",
    "make_tool",
    "tool",
    "tool_def_of",
]
