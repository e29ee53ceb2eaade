"""Where :class:`LazyArtifacts` was before the artifact store became a package.

Kept so that ``from kitaru.storage._lazy import LazyArtifacts`` goes on
working; new code imports it from :mod:`kitaru.storage.artifacts`.
"""

from .artifacts._lazy import LazyArtifacts as LazyArtifacts

__all__ = ("LazyArtifacts",)
