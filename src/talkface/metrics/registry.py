"""The metrics registry: `@register("name")` a function, `compute("name", **inputs)` it.

A metric is a function of named inputs returning a dict of named numbers (one metric may report
several, e.g. LSE-D, LSE-C and the offset). `compute` passes each metric only the inputs its
signature names, so a caller can hand every input it has to every metric. Inputs:

    frames     (T, H, W, 3) uint8 RGB: the video being scored (generated, or any talking video)
    audio      (n,) float32 mono at 16 kHz: the speech that should drive `frames`
    real       (T, H, W, 3) uint8 RGB: ground-truth frames aligned with `frames`
    still      (H, W, 3) uint8 RGB: the identity image the video was made from
    landmarks, real_landmarks   (T, 478, 2) float32, NaN where no face (computed when not given)
    expert     a loaded lip-sync expert (the shipped one when not given)
    poses      (T, 3) float: the head's yaw, pitch and roll in degrees per frame of the full video,
               against its first frame (talkface.geometry.head_pose), NaN where no face
"""
from __future__ import annotations

import inspect
from collections.abc import Callable

Metric = Callable[..., dict[str, float]]

_METRICS: dict[str, Metric] = {}


def register(name: str) -> Callable[[Metric], Metric]:
    """Decorator adding a metric under `name`; its docstring says how it is computed and which way is better."""

    def add(fn: Metric) -> Metric:
        if name in _METRICS and _METRICS[name] is not fn:
            raise ValueError(f"metric {name!r} is already registered")
        _METRICS[name] = fn
        return fn

    return add


def list_metrics() -> list[str]:
    return sorted(_METRICS)


def get(name: str) -> Metric:
    if name not in _METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(list_metrics())}")
    return _METRICS[name]


def requirements(name: str) -> tuple[set[str], set[str]]:
    """(required, optional) input names of a metric."""
    params = inspect.signature(get(name)).parameters.values()
    required = {p.name for p in params if p.default is inspect.Parameter.empty}
    optional = {p.name for p in params if p.default is not inspect.Parameter.empty}
    return required, optional


def applicable(name: str, available: set[str]) -> bool:
    """Whether `available` inputs (names of non-None values) cover what the metric requires."""
    return requirements(name)[0] <= available


def compute(name: str, **inputs) -> dict[str, float]:
    """Run metric `name` on the inputs it accepts (others are ignored; None counts as absent)."""
    fn = get(name)
    required, optional = requirements(name)
    given = {k: v for k, v in inputs.items() if v is not None and k in required | optional}
    missing = required - set(given)
    if missing:
        raise ValueError(f"metric {name!r} needs {', '.join(sorted(missing))}")
    return fn(**given)


def describe(name: str) -> str:
    """A metric's docstring on one line: what it reports, how it is computed, units, which way is better."""
    return " ".join((inspect.getdoc(get(name)) or "").split())
