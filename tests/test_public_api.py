"""The public surface is pinned: adding or removing a name takes a deliberate edit here."""

from __future__ import annotations

import kitaru

# DESIGN section 2 names, plus the documented extras (Backoff, RuntimeConfig, ...).
EXPECTED = {
    "ArtifactNotFound",
    "ArtifactUnreadable",
    "Backoff",
    "Budget",
    "BudgetExceeded",
    "Checkpoint",
    "CheckpointFailed",
    "CheckpointInfo",
    "ConfigurationError",
    "Flow",
    "FlowCancelled",
    "FlowFailed",
    "InvalidMessage",
    "KitaruError",
    "NonDeterminismError",
    "ReplayError",
    "load",
    "log",
    "save",
    "Message",
    "NotInFlow",
    "RunHandle",
    "RunFinished",
    "RunInfo",
    "RunNotFound",
    "RunStatus",
    "Runtime",
    "RuntimeConfig",
    "RuntimeStateError",
    "SchemaVersionError",
    "SerializationError",
    "StorageError",
    "Usage",
    "WaitInfo",
    "WaitTimeout",
    "__version__",
    "checkpoint",
    "configure",
    "continue_as_new",
    "flow",
    "llm",
    "receive",
    "runtime",
    "send",
    "sleep",
    "wait",
}


def test_exports_are_pinned() -> None:
    assert set(kitaru.__all__) == EXPECTED
    assert isinstance(kitaru.__all__, tuple)
    for name in kitaru.__all__:
        assert hasattr(kitaru, name), name


def test_public_classes_say_they_live_in_kitaru() -> None:
    for name in kitaru.__all__:
        obj = getattr(kitaru, name)
        if isinstance(obj, type):
            assert obj.__module__ == "kitaru", name


def test_every_public_name_is_documented() -> None:
    for name in kitaru.__all__:
        if name == "__version__":
            continue
        assert getattr(kitaru, name).__doc__, name


def test_errors_form_one_tree() -> None:
    for name in kitaru.__all__:
        obj = getattr(kitaru, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, kitaru.KitaruError), name


def test_statuses_are_strings() -> None:
    assert kitaru.RunStatus("waiting") == "waiting"
    assert [s.value for s in kitaru.RunStatus] == [
        "running",
        "waiting",
        "sleeping",
        "completed",
        "failed",
        "cancelled",
    ]
