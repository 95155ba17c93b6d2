"""The captioner interface and a name -> factory registry (CONTRACTS section 4).

Callers only ever write `captioner.load(name, **options)`; a new backend is added by registering a factory
(`captioner.register("my-model", factory)`) or, without any registration (e.g. inside Ray workers, which do
not see registrations made in the driver), by naming it as "package.module:factory".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Captioner(Protocol):
    """Turns H x W x 3 uint8 RGB images into one caption each."""

    @property
    def id(self) -> str:
        """Identifies the model and settings that produced the captions (recorded with them)."""
        ...

    def caption(self, images: list[np.ndarray]) -> list[str]: ...


Factory = Callable[..., Captioner]
_REGISTRY: dict[str, Factory] = {}


def register(name: str, factory: Factory, *, overwrite: bool = False) -> None:
    """Make `load(name, **options)` call `factory(**options)`."""
    if not name or ":" in name:
        raise ValueError(f"invalid captioner name {name!r} (non-empty, no ':')")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"captioner {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = factory


def available() -> list[str]:
    """Registered captioner names."""
    return sorted(_REGISTRY)


def load(name: str, **options: Any) -> Captioner:
    """Build a captioner by registered name or by "package.module:factory" path."""
    if name in _REGISTRY:
        factory = _REGISTRY[name]
    elif ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot import captioner factory {name!r}: {e}") from e
    else:
        raise ValueError(
            f"unknown captioner {name!r}; registered: {', '.join(available())} (or 'module:factory')"
        )
    result = factory(**options)
    if not isinstance(result, Captioner):
        raise TypeError(
            f"captioner factory {name!r} returned {type(result).__name__}, which lacks id/caption()"
        )
    return result
