"""The API server inside every pod at ``127.0.0.1:443``, as in-cluster clients expect it.

A kubelet gives every container ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT`` (the
``kubernetes`` Service's ClusterIP and port 443) and kube-proxy carries that address to the
API server. Here the API server listens on the host's loopback only, which a pod's network
namespace cannot reach. So the agent opens, *inside* each pod's network namespace, a
listening socket on ``127.0.0.1:443`` and relays every connection made to it, byte for byte,
to the API server on the host's loopback. TLS passes through untouched: the client checks the
API server's own certificate, whose SANs hold ``127.0.0.1`` and ``kubernetes.default.svc``
(kwokctl's serving certificate), so both ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT``
and ``https://kubernetes.default.svc`` (the pod's hosts file maps it to 127.0.0.1) verify
against the service-account ``ca.crt``. No traffic leaves loopback; nothing listens on the
bridge or on any other address.

One asyncio loop in one thread serves every pod of the agent; an idle pod costs one socket.
A socket is created in another network namespace by a short-lived thread that enters the
namespace (``setns`` switches only the calling thread) and binds there: the socket stays in
that namespace for its life, whoever uses it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from urllib.parse import urlsplit

from localcluster.nodeagent import dns, network

HOST = dns.API_HOST  # in the API server's certificate, as kubernetes.default.svc is (kwokctl's SANs)
PORT = 443  # what KUBERNETES_SERVICE_PORT is in any cluster
CLONE_NEWNET = 0x40000000
CHUNK = 65536


def service_env() -> dict[str, str]:
    """What a kubelet sets in every container for the ``kubernetes`` Service (the env of service links)."""
    return {
        "KUBERNETES_SERVICE_HOST": HOST,
        "KUBERNETES_SERVICE_PORT": str(PORT),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(PORT),
        "KUBERNETES_PORT": f"tcp://{HOST}:{PORT}",
        f"KUBERNETES_PORT_{PORT}_TCP": f"tcp://{HOST}:{PORT}",
        f"KUBERNETES_PORT_{PORT}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{PORT}_TCP_PORT": str(PORT),
        f"KUBERNETES_PORT_{PORT}_TCP_ADDR": HOST,
    }


def api_address(server: str) -> tuple[str, int]:
    """``https://127.0.0.1:32764`` → ("127.0.0.1", 32764): where the relay connects on the host."""
    parts = urlsplit(server)
    if parts.hostname is None:
        raise ValueError(f"no host in API server URL {server!r}")
    return parts.hostname, parts.port or 443


def listen_in_netns(netns: str, host: str = HOST, port: int = PORT) -> socket.socket:
    """A listening TCP socket bound to ``host:port`` inside the network namespace ``netns``."""
    result: list[socket.socket | BaseException] = []

    def enter_and_bind() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(network.NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            # This thread now lives in the pod's namespace until it ends, a moment from now.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(128)
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
            result.append(sock)
        except BaseException as exc:  # handed to the caller's thread
            result.append(exc)

    t = threading.Thread(target=enter_and_bind, name=f"netns-bind-{netns}", daemon=True)
    t.start()
    t.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


class ApiRelay:
    """Relays ``127.0.0.1:443`` of each pod's network namespace to the API server on the host."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="api-relay", daemon=True)
        self._servers: dict[str, asyncio.AbstractServer] = {}
        self._conns: dict[str, set[asyncio.StreamWriter]] = {}
        self.relayed = 0  # connections relayed so far, all pods

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the loop (from any other thread) and wait for it."""
        done: Future[None] = Future()

        def wrapped() -> None:
            try:
                fn()
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        self._loop.call_soon_threadsafe(wrapped)
        done.result(timeout=10)

    def add(self, netns: str) -> None:
        """Start serving the pod with network namespace ``netns`` (before its containers start)."""
        sock = listen_in_netns(netns)
        future = asyncio.run_coroutine_threadsafe(self._serve(netns, sock), self._loop)
        future.result(timeout=10)

    async def _serve(self, netns: str, sock: socket.socket) -> None:
        self._conns[netns] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._relay(netns, reader, writer)

        self._servers[netns] = await asyncio.start_server(handle, sock=sock)

    async def _relay(self, netns: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns = self._conns.get(netns)
        if conns is None:  # the pod went away in the meantime
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.relayed += 1
        conns.update((writer, up_writer))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            conns.discard(writer)
            conns.discard(up_writer)
            for w in (writer, up_writer):
                w.close()

    def remove(self, netns: str) -> None:
        """Stop serving the pod: close its listener and its open connections (each holds its namespace)."""
        def close() -> None:
            server = self._servers.pop(netns, None)
            if server is not None:
                server.close()
            for w in self._conns.pop(netns, set()):
                w.transport.abort()

        if self._thread.is_alive():
            self._call(close)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        for netns in list(self._servers):
            with contextlib.suppress(Exception):
                self.remove(netns)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close the other side (TLS close_notify and HTTP keep working)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()
