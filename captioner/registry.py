"""The captioner interface and a name -> factory registry (CONTRACTS section 4).

Callers only ever write `captioner.load(name, **options)`; a new backend is added by registering a factory
(`captioner.register("my-model", factory)`) or, without any registration (e.g. inside Ray workers, which do
not see registrations made in the driver), by naming it as "package.module:factory".

A registered captioner also states, without loading its model, what it needs (`describe()`, one line each)
and, through `preflight(name, **options)`, whether its options are usable (files present and readable) and
its input size N: the side of the square it squashes every frame to first (`captioner.images.squash`), so a
job may squash frames to N early and still get the same captions. None: it states no such size.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
Preflight = Callable[..., "int | None"]


@dataclass(frozen=True)
class Entry:
    factory: Factory
    needs: str = ""  # one line: what the user must bring
    preflight: Preflight | None = None  # model-free option check; returns the input size (or None)
    options: frozenset[str] | None = None  # option names the factory takes (None: not stated)


_REGISTRY: dict[str, Entry] = {}


def register(
    name: str,
    factory: Factory,
    *,
    overwrite: bool = False,
    needs: str = "",
    preflight: Preflight | None = None,
    options: Iterable[str] | None = None,
) -> None:
    """Make `load(name, **options)` call `factory(**options)`; `needs`, `preflight` and `options` are optional."""
    if not name or ":" in name:
        raise ValueError(f"invalid captioner name {name!r} (non-empty, no ':')")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"captioner {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = Entry(factory, needs, preflight, frozenset(options) if options is not None else None)


def available() -> list[str]:
    """Registered captioner names."""
    return sorted(_REGISTRY)


def describe() -> list[tuple[str, str]]:
    """(name, what it needs) of every registered captioner."""
    return [(name, _REGISTRY[name].needs) for name in available()]


def _check_options(name: str, options: dict[str, Any]) -> Entry | None:
    entry = _REGISTRY.get(name)
    if entry is not None and entry.options is not None:
        unknown = sorted(set(options) - entry.options)
        if unknown:
            raise ValueError(
                f"captioner {name!r} does not take {', '.join(unknown)} "
                f"(it takes: {', '.join(sorted(entry.options)) or 'no options'})"
            )
    return entry


def preflight(name: str, **options: Any) -> int | None:
    """Check a captioner's options without loading a model (ValueError with one line when unusable) and return
    its stated input size. A captioner named by path, or registered without a preflight, is not checked here."""
    if name not in _REGISTRY and ":" not in name:
        raise ValueError(
            f"unknown captioner {name!r}; registered: {', '.join(available())} (or 'module:factory')"
        )
    entry = _check_options(name, options)
    if entry is None or entry.preflight is None:
        return None
    return entry.preflight(**options)


def load(name: str, **options: Any) -> Captioner:
    """Build a captioner by registered name or by "package.module:factory" path."""
    entry = _check_options(name, options)
    if entry is not None:
        factory = entry.factory
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
