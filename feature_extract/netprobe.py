"""Can the download servers be reached? A quick TCP probe, so that an offline run fails in seconds.

``unreachable(urls, timeout)`` opens one TCP connection per distinct ``host:port`` of ``urls``
(through the HTTP(S) proxy of the environment when one is set: then the proxy is probed), all in
parallel, and returns those that did not connect within ``timeout`` seconds, DNS included. It sends
nothing. Only the standard library is imported.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable

DEFAULT_TIMEOUT = 3.0


def endpoints(urls: Iterable[str]) -> list[tuple[str, int]]:
    """Distinct ``(host, port)`` to connect to for ``urls``: the proxy's when one is configured."""
    proxies = urllib.request.getproxies()
    out: list[tuple[str, int]] = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if not parts.hostname:
            continue
        proxy = proxies.get(parts.scheme)
        if proxy and not urllib.request.proxy_bypass(parts.hostname):
            parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        default = 443 if parts.scheme == "https" else 21 if parts.scheme == "ftp" else 80
        point = (parts.hostname or "", parts.port or default)
        if point[0] and point not in out:
            out.append(point)
    return out


def unreachable(
    urls: Iterable[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    points: Iterable[tuple[str, int]] | None = None,
) -> list[str]:
    """``host:port`` of each endpoint of ``urls`` (or of ``points``) that does not accept a TCP
    connection within ``timeout`` seconds; empty when all do."""
    points = list(points) if points is not None else endpoints(urls or ())
    ok: set[tuple[str, int]] = set()

    def connect(point: tuple[str, int]) -> None:
        try:
            with socket.create_connection(point, timeout=timeout):
                ok.add(point)
        except OSError:
            pass

    threads = [threading.Thread(target=connect, args=(p,), daemon=True) for p in points]
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.start()
    for thread in threads:  # all run together: the whole probe takes `timeout` at most
        thread.join(max(0.0, deadline - time.monotonic()))
    return [f"{host}:{port}" for host, port in points if (host, port) not in ok]
