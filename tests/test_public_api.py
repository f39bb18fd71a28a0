"""Every package exports its public names (STYLE 2), and the facade resolves each one."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["tripwire", "events", "triggers", "actions", "blocks"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__, f"{package} exports nothing"
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_facade_names_are_the_real_objects() -> None:
    import tripwire
    from triggers.models import Automation, EventTrigger
    from tripwire.client import emit_event

    assert (tripwire.Automation, tripwire.EventTrigger, tripwire.emit_event) == (
        Automation,
        EventTrigger,
        emit_event,
    )
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = tripwire.nope


@pytest.mark.parametrize("package", ["events", "triggers"])
def test_public_classes_of_modules_are_exported_by_their_module(package: str) -> None:
    """Each module lists what it defines publicly in its own ``__all__``."""
    import pkgutil

    root = importlib.import_module(package)
    for info in pkgutil.iter_modules(root.__path__):
        module = importlib.import_module(f"{package}.{info.name}")
        assert hasattr(module, "__all__"), f"{module.__name__} has no __all__"
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"
