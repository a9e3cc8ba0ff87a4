"""TCP forwarding from an address inside a network namespace to one on this host's loopback.

The real node's pods live in a network namespace the dev environment owns; the API server and the
queue servers listen on the host's loopback. This process opens each listening socket inside the
namespace (a thread enters it with setns, binds, and the socket stays there) and connects out from
the host's namespace, so nothing but loopback and the namespace's own addresses carry traffic.

    python -m devenv.netns_forward /run/netns/NAME 10.96.0.1:443=127.0.0.1:6443 [...]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

CLONE_NEWNET = 0x40000000
BUFFER_BYTES = 65536
CONNECT_TIMEOUT_SECONDS = 5.0


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def _socket_in_namespace(namespace: Path, make: Callable[[], socket.socket]) -> socket.socket:
    """The socket `make` opens, opened inside the network namespace at `namespace`."""
    result: list[socket.socket | BaseException] = []

    def enter_and_make() -> None:
        try:
            with namespace.open("rb") as handle:
                _setns(handle.fileno())
            result.append(make())
        except BaseException as error:  # handed to the caller's thread
            result.append(error)

    # A thread of its own: setns moves only the calling thread, which ends right after; the socket
    # stays in the namespace it was made in.
    thread = threading.Thread(target=enter_and_make, name="enter-namespace")
    thread.start()
    thread.join()
    [outcome] = result
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def listen_in_namespace(namespace: Path, address: tuple[str, int]) -> socket.socket:
    """A listening socket bound to `address` inside the network namespace at `namespace`."""
    return _socket_in_namespace(namespace, lambda: socket.create_server(address, backlog=128))


def connect_in_namespace(namespace: Path, address: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    """A connection to `address` as seen from inside the namespace (a pod's IP, say)."""
    return _socket_in_namespace(namespace, lambda: socket.create_connection(address, timeout=timeout))


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(BUFFER_BYTES):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _serve_connection(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=CONNECT_TIMEOUT_SECONDS)
    except OSError:
        client.close()
        return
    pipe(client, upstream)


def pipe(client: socket.socket, upstream: socket.socket) -> None:
    """Pass bytes both ways until both sides are done; then close both."""
    upstream.settimeout(None)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def forward(listener: socket.socket, target: tuple[str, int]) -> None:
    """Accept on `listener` until it is closed; each connection is piped to `target`."""
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_serve_connection, args=(client, target), daemon=True).start()


def parse_rule(rule: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """`LISTEN_HOST:PORT=TARGET_HOST:PORT`; the target must be on loopback."""
    try:
        listen, target = rule.split("=")
        listen_host, listen_port = listen.rsplit(":", 1)
        target_host, target_port = target.rsplit(":", 1)
        parsed = (listen_host, int(listen_port)), (target_host, int(target_port))
    except ValueError:
        raise ValueError(f"a rule is LISTEN_HOST:PORT=127.0.0.1:PORT, not {rule!r}") from None
    if not target_host.startswith("127."):
        raise ValueError(f"forwarding goes to loopback only, not {target_host!r} (rule {rule!r})")
    return parsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("namespace", type=Path, help="the network namespace's file, e.g. /run/netns/NAME")
    parser.add_argument("rules", nargs="+", help="LISTEN_HOST:PORT=127.0.0.1:PORT")
    args = parser.parse_args(argv)
    rules = [parse_rule(rule) for rule in args.rules]
    threads = []
    for listen, target in rules:
        listener = listen_in_namespace(args.namespace, listen)
        print(
            f"forwarding {listen[0]}:{listen[1]} in {args.namespace} to {target[0]}:{target[1]}", flush=True
        )
        thread = threading.Thread(target=forward, args=(listener, target), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
