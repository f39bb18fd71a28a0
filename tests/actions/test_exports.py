"""The actions package exports its public API (loaded on first use), and every module declares __all__."""

from __future__ import annotations

import importlib
import pkgutil

import actions


def test_everything_in_all_is_importable_from_the_package() -> None:
    for name in actions.__all__:
        assert getattr(actions, name) is not None, name
    assert set(actions.__all__) <= set(dir(actions))


def test_every_module_declares_all_and_its_names_exist() -> None:
    for info in pkgutil.iter_modules(actions.__path__):
        module = importlib.import_module(f"actions.{info.name}")
        assert hasattr(module, "__all__"), info.name
        for name in module.__all__:
            assert hasattr(module, name), f"actions.{info.name}.{name}"


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        actions.nothing_here  # noqa: B018
    except AttributeError as exc:
        assert "nothing_here" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
