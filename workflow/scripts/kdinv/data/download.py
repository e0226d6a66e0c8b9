"""Resumable, checked downloads of large data files, and the data errors every reader raises.

The ModelNet40 zip (2 GB, from a host that is known to be fragile) and the jet archives (2.7 GB)
cannot be fetched in one go on every network, so :func:`fetch_file`:

- streams into ``<dest>.part`` and, on the next attempt (or the next run of the job), continues
  where it stopped with an HTTP ``Range`` request; a server that ignores the range (status 200)
  restarts the file from the start;
- retries network errors, timeouts, HTTP 5xx/408/425/429 and short bodies with exponential
  back-off; other 4xx fail at once (a wrong URL does not heal);
- checks the size and the md5 before it renames the file into place, so ``dest`` is either
  absent or complete and verified. A file with a wrong md5 is deleted, never kept.

``file://`` URLs work too (for mirrors on a shared file system, and for tests).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
# torchvision's User-Agent string; some mirrors reject urllib's default one.
USER_AGENT = "pytorch/vision"
# HTTP statuses worth retrying; every other 4xx is permanent.
_RETRY_HTTP_STATUS = {408, 425, 429}


class DataError(RuntimeError):
    """A data file is missing, corrupt, malformed or could not be fetched.

    The message always names the file and says what is wrong with it.
    """


class ChecksumError(DataError):
    """A file's md5 differs from the official one."""


class DownloadError(DataError):
    """A file could not be downloaded (HTTP error, network error, timeout, short body)."""


@contextlib.contextmanager
def staging_dir(dest: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``dest`` (in its parent, so the final moves into
    ``dest`` are renames on one file system); remove it and its content on exit. The parent is
    created if needed; ``dest`` itself is not."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def md5sum(path: str | Path) -> str:
    """Hex md5 digest of the file at ``path`` (read in 1 MiB chunks)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _retryable(exc: DataError) -> bool:
    cause = exc.__cause__
    if isinstance(cause, urllib.error.HTTPError):
        return cause.code >= 500 or cause.code in _RETRY_HTTP_STATUS
    return True  # network errors, timeouts, short bodies, checksum mismatches


def _transfer(url: str, part: Path, name: str, timeout_s: float) -> None:
    """Append the rest of ``url`` to ``part`` (resuming at its current size)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset and not url.startswith("file:"):
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status = getattr(response, "status", None)
            if status == 206:
                log.info("%s: resuming at byte %d", name, offset)
                mode = "ab"
            else:  # 200 (range ignored) or file://: start again
                offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            received = 0
            with open(part, mode) as fh:
                while chunk := response.read(_CHUNK):
                    fh.write(chunk)
                    received += len(chunk)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the range starts at or past the end: nothing left to fetch
            return
        raise DownloadError(f"{name}: HTTP error {exc.code} {exc.reason} from {url}") from exc
    except urllib.error.URLError as exc:
        raise DownloadError(f"{name}: cannot reach {url}: {exc.reason}") from exc
    except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
        raise DownloadError(
            f"{name}: download from {url} failed after {part.stat().st_size if part.exists() else 0} "
            f"bytes: {type(exc).__name__}: {exc} (timeout {timeout_s:g} s); the partial file "
            f"{part} is kept and the next attempt resumes from it"
        ) from exc
    if length is not None and length.isdigit() and received != int(length):
        raise DownloadError(
            f"{name}: short download from {url}: received {received} of {length} bytes; the partial "
            f"file {part} is kept and the next attempt resumes from it"
        )


def _verify(path: Path, name: str, url: str, md5: str | None, size: int | None) -> None:
    if size is not None:
        actual = path.stat().st_size
        if actual != size:
            raise ChecksumError(f"{name}: {actual} bytes downloaded from {url}, expected {size}")
    if md5 is not None:
        actual_md5 = md5sum(path)
        if actual_md5 != md5:
            raise ChecksumError(
                f"{name}: md5 {actual_md5} does not match the official {md5} (downloaded from {url}); "
                "the file is corrupt or not the original"
            )


def fetch_file(
    url: str,
    dest: str | Path,
    *,
    md5: str | None = None,
    size: int | None = None,
    retries: int = 3,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
) -> Path:
    """Download ``url`` into ``dest``, resumably, and check its size and md5.

    Args:
        url: ``http(s)://`` or ``file://`` URL of the file.
        dest: where the verified file ends up. When it already exists with the right md5 nothing
            is fetched; with a wrong one it is fetched again.
        md5, size: the expected checksum and byte count (None: not checked).
        retries: attempts in all (>= 1); each continues the partial file.
        backoff_s: base of the exponential back-off between attempts, seconds.
        timeout_s: socket timeout of each connection and read, seconds.

    Returns:
        ``dest``.

    Raises:
        DownloadError: the file could not be fetched (names the file, the URL and the reason).
        ChecksumError: the complete file has the wrong size or md5 on the last attempt (names the
            file, the URL and both values); the bad file is deleted.
    """
    if retries < 1:
        raise ValueError(f"retries must be >= 1, got {retries}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    dest = Path(dest)
    name = dest.name
    if dest.exists():
        if md5 is None or md5sum(dest) == md5:
            log.info("%s: already present and verified", dest)
            return dest
        log.warning("%s: present with a wrong md5; fetching it again", dest)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, retries + 1):
        try:
            log.info("downloading %s (attempt %d of %d)", url, attempt, retries)
            _transfer(url, part, name, timeout_s)
            if size is not None and part.stat().st_size < size:
                raise DownloadError(
                    f"{name}: the connection to {url} ended after {part.stat().st_size} of {size} "
                    f"bytes; the partial file {part} is kept and the next attempt resumes from it"
                )
            try:
                _verify(part, name, url, md5, size)
            except ChecksumError:
                part.unlink(missing_ok=True)  # a complete but wrong file: never resume from it
                raise
            os.replace(part, dest)
            log.info("%s: %d bytes, md5 %s verified", dest, dest.stat().st_size, md5 or "(not checked)")
            return dest
        except DataError as exc:
            if attempt == retries or not _retryable(exc):
                tries = f"{attempt} attempt" + ("s" if attempt > 1 else "")
                raise type(exc)(f"{exc} [gave up after {tries}]") from exc
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning("%s; retrying in %.1f s", exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
