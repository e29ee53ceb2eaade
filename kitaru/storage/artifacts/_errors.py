"""Filesystem errors turned into kitaru's, each with what to do about it.

fsspec implementations raise their driver's exceptions (botocore's, aiohttp's,
the OS's); the artifact store reports them as :class:`~kitaru.ConfigurationError`
(the URL or an install is wrong) or :class:`~kitaru.StorageError` (the
filesystem failed), with a hint for the usual causes: a missing bucket, denied
access, an object store that does not answer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread

from kitaru._errors import ConfigurationError, StorageError

from ._options import safe_protocols, scrub, shown

__all__ = ("call_config", "config_error", "hint", "is_missing_bucket", "translating")

_T = TypeVar("_T")

# kitaru extras that install the fsspec implementation of a protocol.
_EXTRAS = {"s3": "s3", "s3a": "s3"}
# Exception classes (by name, anywhere in the MRO) meaning the server did not
# answer: builtins, botocore's and aiohttp's.
_CONNECTION_ERRORS = frozenset(
    {
        "ConnectionError",
        "TimeoutError",
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ClientConnectorError",
        "ServerDisconnectedError",
    }
)


def config_error(url: str, exc: Exception) -> ConfigurationError:
    """The :class:`~kitaru.ConfigurationError` for ``exc``, raised while building the filesystem."""
    where = shown(url)
    detail = scrub(str(exc))
    if isinstance(exc, ImportError):
        missing = detail or type(exc).__name__
        extras = sorted({_EXTRAS[p] for p in safe_protocols(url) if p in _EXTRAS})
        install = "".join(f"; pip install 'kitaru[{extra}]'" for extra in extras)
        return ConfigurationError(
            f"artifact store {where} needs a filesystem that is not installed: {missing}{install}"
        )
    if isinstance(exc, ValueError) and "protocol not known" in str(exc).lower():
        return ConfigurationError(
            f"artifact store {where} has an unknown protocol ({detail}): use a folder, "
            "'file://…', 'memory://…' or an fsspec URL such as 's3://bucket/prefix'"
        )
    if isinstance(exc, TypeError) and "?" in url:
        return ConfigurationError(
            f"invalid artifact store {where}: {type(exc).__name__}: {detail}. Each option in "
            "the URL's query must be a keyword argument of the fsspec filesystem "
            "(for s3://, of s3fs.S3FileSystem, such as endpoint_url or region_name)"
        )
    return ConfigurationError(f"invalid artifact store {where}: {type(exc).__name__}: {detail}")


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def is_missing_bucket(exc: BaseException) -> bool:
    for cause in _causes(exc):
        response = getattr(cause, "response", None)
        error = response.get("Error") if isinstance(response, dict) else None
        if isinstance(error, dict) and error.get("Code") in ("NoSuchBucket", "ContainerNotFound"):
            return True
    return isinstance(exc, FileNotFoundError) and "bucket does not exist" in str(exc).lower()


def _is_unreachable(exc: BaseException) -> bool:
    return any(
        cls.__name__ in _CONNECTION_ERRORS for cause in _causes(exc) for cls in type(cause).__mro__
    )


def hint(exc: BaseException) -> str:
    """What to do about a filesystem error, when its kind says it."""
    if is_missing_bucket(exc):
        return (
            ". The bucket does not exist: create it (kitaru does not create buckets), "
            "or fix the bucket name in the artifact store URL"
        )
    if isinstance(exc, PermissionError):
        return (
            ". Access was denied: check the credentials (for S3: AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and that they may read and write "
            "objects under this prefix"
        )
    if _is_unreachable(exc):
        return (
            ". The object store did not answer: check that it is running and reachable; "
            "for an S3-compatible server, its address comes from the URL's endpoint_url "
            "option or from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL"
        )
    return ""


def _translate(url: str, exc: Exception) -> Exception:
    if isinstance(exc, ImportError | ValueError | TypeError):
        return config_error(url, exc)
    return StorageError(
        f"cannot create the filesystem of artifact store {shown(url)}: "
        f"{type(exc).__name__}: {scrub(str(exc))}"
    )


def translating(url: str, func: Callable[..., _T], *args: Any) -> _T:
    # Only errors of ``func`` itself are translated, not those of the thread
    # machinery around it.
    try:
        return func(*args)
    except Exception as exc:
        raise _translate(url, exc) from exc


async def call_config(url: str, func: Callable[..., _T], *args: Any) -> _T:
    """Run ``func`` in a thread: it may import a driver or connect."""
    return await anyio.to_thread.run_sync(functools.partial(translating, url, func, *args))
