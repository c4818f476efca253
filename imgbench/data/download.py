"""Download a file with a checksum: streaming, timeout, retries with backoff, atomic rename."""
from __future__ import annotations

import hashlib
import http.client
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from ..errors import UserError

CHUNK = 1 << 20


class DownloadError(UserError):
    """The file could not be fetched or did not match its checksum."""


def md5sum(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_md5(path: str | Path, md5: str) -> None:
    """Raise DownloadError (and delete the file) when its md5 is not `md5`."""
    got = md5sum(path)
    if got != md5.lower():
        Path(path).unlink(missing_ok=True)
        raise DownloadError(f"{path} has md5 {got}, expected {md5}: deleted it; "
                            "rerun to download again, or place the official archive there")


def _fetch_once(url: str, tmp: Path, timeout: float, log: Callable[[str], None]) -> str:
    h = hashlib.md5()
    with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as out:
        total = r.headers.get("Content-Length")
        total = int(total) if total else None
        done, next_report = 0, 0.1
        while chunk := r.read(CHUNK):
            out.write(chunk)
            h.update(chunk)
            done += len(chunk)
            if total and done / total >= next_report:
                log(f"  {done / 2**20:.1f} of {total / 2**20:.1f} MiB ({100 * done // total}%)")
                next_report += 0.1
        if total is not None and done != total:
            raise http.client.IncompleteRead(b"", total - done)
    return h.hexdigest()


def download(url: str, dest: str | Path, md5: str, *, timeout: float = 15.0, tries: int = 3,
             backoff: float = 2.0, log: Callable[[str], None] = print, offline_hint: str = "") -> Path:
    """Fetch `url` to `dest`, verified against `md5`.

    An existing `dest` is used if its md5 matches. The body goes to a temporary sibling that is
    renamed only after the checksum matches, so `dest` is either complete and right or absent.
    """
    dest = Path(dest)
    if dest.exists():
        log(f"{dest} exists; checking its md5")
        check_md5(dest, md5)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")  # fixed: a killed download's is replaced by the next
    last = None
    try:
        for attempt in range(1, tries + 1):
            log(f"downloading {url} (try {attempt} of {tries})")
            try:
                got = _fetch_once(url, tmp, timeout, log)
            except (urllib.error.URLError, OSError, http.client.HTTPException, TimeoutError) as e:
                last = getattr(e, "reason", None) or e
                log(f"  failed: {last!r}")
                tmp.unlink(missing_ok=True)
                if attempt < tries:
                    time.sleep(backoff * 2 ** (attempt - 1))
                continue
            if got != md5.lower():
                raise DownloadError(f"{url} gave a file with md5 {got}, expected {md5}: "
                                    "deleted it; check cifar10.url and cifar10.md5 in config.yaml")
            tmp.replace(dest)
            log(f"saved {dest} (md5 {got})")
            return dest
    finally:
        tmp.unlink(missing_ok=True)
    raise DownloadError(f"cannot download {url} after {tries} tries ({last}); {offline_hint}".rstrip("; "))
