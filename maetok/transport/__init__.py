"""The generative process, kept out of the model (SiT's `transport/` layout):
path.py (alpha_t / sigma_t math), integrators.py (model-free steppers), transport.py
(training loss with named terms, sampler closures `sample_fn(z, model_fn, **kw)`)."""

from maetok.transport.path import CosinePath, LinearPath, Path, PathType, make_path
from maetok.transport.transport import (
    IndexedNoise,
    TimeSampling,
    Transport,
    balanced_labels,
    build_transport,
    initial_noise,
    null_labels,
)

__all__ = [
    "CosinePath",
    "IndexedNoise",
    "LinearPath",
    "Path",
    "PathType",
    "TimeSampling",
    "Transport",
    "balanced_labels",
    "build_transport",
    "initial_noise",
    "make_path",
    "null_labels",
]
