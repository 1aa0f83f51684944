"""The public API is what ``warden.__all__`` says; this pins it."""

import warden


def test_public_names_are_pinned() -> None:
    assert sorted(warden.__all__) == sorted(
        [
            "Allowed",
            "ApprovalRecord",
            "CelCompileError",
            "CelError",
            "CelEvalError",
            "CelSyntaxError",
            "ChatResult",
            "ChatStreamResult",
            "Denied",
            "Drafted",
            "Effect",
            "EffectClass",
            "Failed",
            "FailureKind",
            "FieldError",
            "Gateway",
            "NotFoundError",
            "Pending",
            "Result",
            "Run",
            "SpecError",
            "SpecIssue",
            "StoreError",
            "SyncGateway",
            "SyncRun",
            "Tier",
            "ToolError",
            "UsageError",
            "WardenError",
            "load_spec",
            "tool",
        ]
    )
    for name in warden.__all__:
        assert hasattr(warden, name)


def test_exceptions_share_one_root() -> None:
    for name in ("CelError", "NotFoundError", "SpecError", "StoreError", "ToolError", "UsageError"):
        assert issubclass(getattr(warden, name), warden.WardenError)
    assert issubclass(warden.NotFoundError, warden.UsageError)
