"""Quantitative measures of talking-face videos: lip sync, image quality against ground truth,
identity and stability, blinks and head motion. `list_metrics()` names them, `compute(name, **inputs)` runs one; each
metric's docstring says how it is computed, its units and which way is better."""
from talkface.metrics.registry import applicable, compute, describe, get, list_metrics, register, requirements
from talkface.metrics import expression, image, sync  # noqa: E402,F401  (registers the metrics)

__all__ = ["applicable", "compute", "describe", "get", "list_metrics", "register", "requirements"]
