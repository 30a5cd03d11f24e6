"""Inside a sandbox: ``127.0.0.1:<port>`` relayed to the egress proxy's Unix socket.

Run as ``python -I -S bridge.py <socket> <port> -- <argv...>`` (standard library only;
the sandbox has no network, its loopback is its own). The listening socket is bound
before anything else, then a child relays each connection to the socket bound into the
sandbox, and this process becomes the server (``exec``), so the server's stdio, pid and
exit are its own. The child has no stdio of the server's and dies with the sandbox.
"""

import contextlib
import os
import selectors
import socket
import sys

CHUNK = 65536


def relay(listener: socket.socket, path: str) -> None:
    """One thread, one selector: accept, connect to ``path``, copy both ways."""
    chooser = selectors.DefaultSelector()
    chooser.register(listener, selectors.EVENT_READ, None)
    while True:
        for key, _ in chooser.select():
            if key.data is None:
                client, _ = listener.accept()
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    upstream.connect(path)
                except OSError:
                    client.close()
                    upstream.close()
                    continue
                chooser.register(client, selectors.EVENT_READ, upstream)
                chooser.register(upstream, selectors.EVENT_READ, client)
                continue
            source, target = key.fileobj, key.data
            try:
                data = source.recv(CHUNK)  # type: ignore[union-attr]
                if data:
                    target.sendall(data)
                    continue
            except OSError:
                pass
            for sock in (source, target):
                with contextlib.suppress(KeyError, ValueError):
                    chooser.unregister(sock)
                sock.close()  # type: ignore[union-attr]


def main() -> None:
    path, port, separator, *argv = sys.argv[1:]
    if separator != "--" or not argv:
        sys.exit("usage: bridge.py <socket> <port> -- <argv...>")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(port)))
    listener.listen(64)
    if os.fork() == 0:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.setsid()
        try:
            relay(listener, path)
        finally:
            os._exit(0)
    listener.close()
    os.execvp(argv[0], argv)  # noqa: S606 (the server's own argv, as spawn built it)


if __name__ == "__main__":
    main()
