"""A TCP proxy on 127.0.0.1 that a test can cut, so the database seems to go away.

The shared PostgreSQL server is never restarted by the tests: a store is
pointed at this proxy instead, and the proxy

- :meth:`TcpProxy.drop` closes every connection and stops listening
  (clients get "connection refused", as from a stopped server), and
  :meth:`TcpProxy.restore` listens again on the same port;
- :meth:`TcpProxy.cut_next_response` lets the next request through to the
  server but closes that connection before the answer gets back: the
  statement ran (and committed) but the client cannot know;
- :meth:`TcpProxy.stall_next_response` does the same but keeps the
  connection open: a network that died silently.

:class:`Pooler` stands in for PgBouncer's handling of startup parameters.
"""

from __future__ import annotations

from types import TracebackType
from urllib.parse import urlsplit

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream, SocketAttribute, SocketStream, TaskGroup

__all__ = ("TcpProxy", "via")


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port``; use with ``async with``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0
        self._tg: TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None
        self._cut_armed = False
        self._stall_armed = False

    async def __aenter__(self) -> TcpProxy:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        await self.restore()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(exc_type, exc, tb)

    def drop(self) -> None:
        """Close every proxied connection and stop accepting new ones."""
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None

    async def restore(self) -> None:
        """Accept connections again (on the same port)."""
        assert self._tg is not None
        if self._scope is None:
            self._scope = anyio.CancelScope()
            await self._tg.start(self._serve, self._scope)

    def cut_next_response(self) -> None:
        """Forward the next client request, then close its connection instead of answering."""
        self._cut_armed = True

    def stall_next_response(self) -> None:
        """Forward the next client request, then swallow its connection's answers.

        The connection stays open: a network that died silently.
        """
        self._stall_armed = True

    async def _serve(
        self, scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        with scope:
            listener = await anyio.create_tcp_listener(
                local_host="127.0.0.1", local_port=self.port, reuse_port=False
            )
            self.port = listener.extra(SocketAttribute.local_port)
            task_status.started()
            async with listener:
                await listener.serve(self._handle)

    async def _handle(self, client: SocketStream) -> None:
        self.accepted += 1
        async with client:
            try:
                upstream = await anyio.connect_tcp(*self.target)
            except OSError:
                return
            async with upstream, anyio.create_task_group() as tg:
                cut, stalled = anyio.Event(), anyio.Event()
                tg.start_soon(self._pipe, client, upstream, tg, cut, stalled, True)
                tg.start_soon(self._pipe, upstream, client, tg, cut, stalled, False)

    async def _pipe(
        self,
        source: ByteReceiveStream,
        sink: ByteSendStream,
        tg: TaskGroup,
        cut: anyio.Event,
        stalled: anyio.Event,
        from_client: bool,
    ) -> None:
        try:
            async for chunk in source:
                if from_client and self._cut_armed:
                    self._cut_armed = False
                    cut.set()  # this connection's next answer never arrives
                elif from_client and self._stall_armed:
                    self._stall_armed = False
                    stalled.set()  # nor any later one, but the socket stays open
                elif not from_client and cut.is_set():
                    break
                elif not from_client and stalled.is_set():
                    continue
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        tg.cancel_scope.cancel()  # one side ended: close both


_SSL_REQUEST = 80877103
_GSS_REQUEST = 80877104
_CANCEL_REQUEST = 80877102


class Pooler(TcpProxy):
    """A proxy that treats startup parameters as PgBouncer does.

    ``refuse`` (PgBouncer's default) ends the connection with PgBouncer's
    error for any parameter outside ``allowed``; ``drop`` (PgBouncer's
    ``ignore_startup_parameters``) removes them and connects anyway. It
    answers "no" to an SSL or GSS request, as a pooler without TLS does.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        mode: str,
        allowed: tuple[str, ...] = ("user", "database", "application_name", "client_encoding"),
    ) -> None:
        super().__init__(target_host, target_port)
        self.mode = mode
        self.allowed = allowed
        self.refused: list[str] = []

    async def _handle(self, client: SocketStream) -> None:
        self.accepted += 1
        async with client:
            try:
                packet = await _startup_packet(client)
                if int.from_bytes(packet[:4], "big") == _CANCEL_REQUEST:
                    # Passed on as it is (asyncpg cancels a timed-out statement so).
                    async with await anyio.connect_tcp(*self.target) as upstream:
                        await upstream.send((len(packet) + 4).to_bytes(4, "big") + packet)
                    return
                params = _params(packet)
                extra = [key for key in params if key not in self.allowed]
                if extra and self.mode == "refuse":
                    self.refused += extra
                    await client.send(_fatal("08P01", f"unsupported startup parameter: {extra[0]}"))
                    return
                kept = {k: v for k, v in params.items() if k in self.allowed}
                upstream = await anyio.connect_tcp(*self.target)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return
            async with upstream, anyio.create_task_group() as tg:
                await upstream.send(_build(packet[:4], kept))
                cut, stalled = anyio.Event(), anyio.Event()
                tg.start_soon(self._pipe, client, upstream, tg, cut, stalled, True)
                tg.start_soon(self._pipe, upstream, client, tg, cut, stalled, False)


async def _read(stream: SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += await stream.receive(size - len(data))
    return data


async def _startup_packet(client: SocketStream) -> bytes:
    """The startup message's body (after its length), answering SSL/GSS requests with "N"."""
    while True:
        length = int.from_bytes(await _read(client, 4), "big")
        body = await _read(client, length - 4)
        if int.from_bytes(body[:4], "big") not in (_SSL_REQUEST, _GSS_REQUEST):
            return body
        await client.send(b"N")


def _params(body: bytes) -> dict[str, str]:
    parts = body[4:].split(b"\0")
    pairs = [p.decode() for p in parts[:-2]] if len(parts) > 2 else []
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


def _build(version: bytes, params: dict[str, str]) -> bytes:
    body = version + b"".join(f"{k}\0{v}\0".encode() for k, v in params.items()) + b"\0"
    return (len(body) + 4).to_bytes(4, "big") + body


def _fatal(code: str, message: str) -> bytes:
    fields = f"SFATAL\0VFATAL\0C{code}\0M{message}\0".encode() + b"\0"
    return b"E" + (len(fields) + 4).to_bytes(4, "big") + fields


def via(proxy: TcpProxy, url: str) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{userinfo}{at}127.0.0.1:{proxy.port}").geturl()
