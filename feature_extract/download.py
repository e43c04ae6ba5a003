"""Checkpoint download cache: resumable, size-checked, sha256 recorded.

``fetch(url)`` returns ``(path, sha256)`` of ``<cache>/<basename of url>`` (or
``<cache>/<filename>`` when one is given: hub files share a basename, ``model.safetensors``),
where the cache is ``cache_dir``, else ``$DPLP_CACHE``, else ``~/.cache/dp_linear_probe``. A
missing file is downloaded to ``<file>.part`` (an existing ``.part`` is resumed with an HTTP
``Range`` request), its size checked against ``Content-Length`` (and the expected ``size``), its
sha256 checked against the expected one (if given) and recorded in the sidecar ``<file>.sha256``;
only then is it renamed into place. A file put in the cache by hand is hashed once and recorded
the same way.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request

_CHUNK = 1 << 20


class DownloadError(OSError):
    """A download failed, was interrupted, or gave a file of the wrong size or hash."""


def cache_dir(path: str | None = None) -> str:
    """The checkpoint cache directory: ``path``, ``$DPLP_CACHE`` or ``~/.cache/dp_linear_probe``."""
    return os.path.expanduser(
        path or os.environ.get("DPLP_CACHE") or os.path.join("~", ".cache", "dp_linear_probe")
    )


def cache_path(url: str, directory: str | None = None, filename: str | None = None) -> str:
    """Where ``url`` is cached: ``<cache>/<filename>``, by default the URL path's basename."""
    name = filename or os.path.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise ValueError(f"URL {url!r} does not name a file")
    return os.path.join(cache_dir(directory), name)


def sha256_file(path: str) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _record(path: str, expected: str | None) -> str:
    """Hash ``path`` (or read its sidecar), check it against ``expected``; return the hex digest."""
    sidecar = path + ".sha256"
    digest = ""
    if os.path.exists(sidecar) and os.path.getmtime(sidecar) >= os.path.getmtime(path):
        with open(sidecar) as f:
            digest = (f.read().split() or [""])[0]
    if not digest:
        digest = sha256_file(path)
        with open(sidecar, "w") as f:
            f.write(f"{digest}  {os.path.basename(path)}\n")
    if expected and digest != expected.lower():
        raise DownloadError(
            f"{path}: sha256 {digest} differs from the expected {expected}; "
            "delete the file (and its .sha256) and fetch it again"
        )
    return digest


def _total_size(resp, offset: int) -> int | None:
    """The full file size from a 200 (Content-Length) or 206 (Content-Range) response."""
    content_range = resp.headers.get("Content-Range")
    if resp.status == 206 and content_range:
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range)
        if m and m.group(3) != "*":
            return int(m.group(3))
    length = resp.headers.get("Content-Length")
    if length is None:
        return None
    return int(length) + (offset if resp.status == 206 else 0)


def _offline_message(url: str, dest: str, reason: object) -> str:
    return (
        f"could not download {url} ({reason}). Without network, download it on another "
        f"machine and place it at {dest} (or pass checkpoint=PATH / --checkpoint PATH); "
        "set $DPLP_CACHE to use another cache directory"
    )


def _download(url: str, dest: str, size: int | None, timeout: float) -> None:
    part = dest + ".part"
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and size is not None and offset == size:  # .part already complete
            os.replace(part, dest)
            return
        raise DownloadError(_offline_message(url, dest, f"HTTP {e.code}")) from e
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(_offline_message(url, dest, getattr(e, "reason", e))) from e
    with resp:
        if resp.status != 206:  # server ignored the Range request: start over
            offset = 0
        total = _total_size(resp, offset)
        if size is not None and total is not None and total != size:
            raise DownloadError(f"{url}: the server reports {total} bytes, expected {size}")
        written = offset
        try:
            with open(part, "ab" if offset else "wb") as f:
                while block := resp.read(_CHUNK):
                    f.write(block)
                    written += len(block)
        except (http.client.IncompleteRead, OSError) as e:
            raise DownloadError(
                f"download of {url} interrupted after {written} bytes ({e}); "
                f"run again to resume from {part}"
            ) from e
    expected = size if size is not None else total
    if expected is not None and written != expected:
        if written > expected:
            os.remove(part)
        raise DownloadError(
            f"{url}: got {written} bytes, expected {expected}"
            + ("; run again to resume" if written < expected else "")
        )
    os.replace(part, dest)


def fetch(
    url: str,
    *,
    cache_dir: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    download: bool = True,
    timeout: float = 60.0,
    filename: str | None = None,
) -> tuple[str, str]:
    """Path and sha256 of the cached copy of ``url``, downloading it first if needed.

    A freshly downloaded file whose sha256 differs from ``sha256`` is deleted before the error.
    """
    dest = cache_path(url, cache_dir, filename)
    fresh = not os.path.exists(dest)
    if fresh:
        if not download:
            raise FileNotFoundError(
                f"{dest} is not in the cache and downloading is off: fetch "
                f"{url} and place it there (or pass checkpoint=PATH)"
            )
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        _download(url, dest, size, timeout)
    if size is not None and os.path.getsize(dest) != size:
        raise DownloadError(
            f"{dest} has {os.path.getsize(dest)} bytes, expected {size}; delete it and fetch again"
        )
    try:
        return dest, _record(dest, sha256)
    except DownloadError:
        if fresh:
            for path in (dest, dest + ".sha256"):
                os.remove(path)
        raise
