"""Streamed, resumable downloads into a cache folder (used by ``emoportraits download``).

A file is written to ``NAME.part`` beside its destination and renamed when it is complete, so a file
under its final name is always whole. An interrupted download keeps its ``.part``: the next call asks
for the rest with an HTTP Range request, and starts over only when the server cannot resume.

Two ways in: plain http(s) URLs (a URL that answers with JSON ``{"href": …}``, as Yandex Disk's
public download API does, is followed to that href), and Google Drive folders through ``gdown``
(imported only when needed; it is the optional ``download`` extra).
"""
from __future__ import annotations

import errno
import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .errors import DownloadError

CHUNK = 1 << 20
TIMEOUT = 60                       # seconds without a byte before the connection counts as lost
USER_AGENT = "emoportraits-download (+https://github.com/emoportraits/emoportraits)"
DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# a cut connection or a server that stops answering: the .part is kept for the next call
_CONNECTION_LOST = (http.client.HTTPException, ConnectionError, TimeoutError)


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL


def looks_like_html(head: bytes) -> bool:
    """Whether the first bytes of a file are a web page (what file hosts send instead of a file
    they will not serve: a login, quota or virus-scan confirmation page)."""
    start = head.lstrip()[:64].lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in start


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _request(url: str, offset: int):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT)


def _json_error(error: urllib.error.HTTPError) -> str:
    """The human-readable part of an API's JSON error body (Yandex: ``description``), if any."""
    try:
        body = json.loads(error.read(65536) or b"{}")
    except (ValueError, OSError):
        return ""
    text = (body.get("description") or body.get("message") or "") if isinstance(body, dict) else ""
    return f": {text}" if text else ""


def _follow_href(resp, url: str) -> str:
    """The download address in a JSON ``{"href": …}`` answer."""
    try:
        body = json.loads(resp.read(1 << 20))
    except ValueError:
        raise DownloadError(f"{_host(url)} answered with malformed JSON instead of the file ({url})") from None
    finally:
        resp.close()
    href = body.get("href") if isinstance(body, dict) else None
    if not isinstance(href, str) or not href.startswith(("http://", "https://")):
        raise DownloadError(f"{_host(url)} answered with JSON that has no download link ({url})")
    return href


def _open(url: str, offset: int):
    """The response for ``url`` from byte ``offset``, after following one JSON href; errors are
    DownloadError. An HTTP 416 (the range cannot be served) is returned as None."""
    try:
        resp = _request(url, offset)
        if resp.headers.get_content_type() == "application/json":
            resp = _request(_follow_href(resp, url), offset)
        return resp
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            return None
        raise DownloadError(f"{_host(e.url or url)} answered HTTP {e.code} {e.reason}{_json_error(e)} ({url})") \
            from None
    except urllib.error.URLError as e:
        raise DownloadError(f"cannot reach {_host(url)} ({e.reason}); check the network connection, or pass "
                            f"--from with files you already have", resumable=True) from None
    except _CONNECTION_LOST as e:
        raise DownloadError(f"the connection to {_host(url)} failed ({type(e).__name__}: {e}); run the same "
                            f"command again to retry", resumable=True) from None


def _total_size(resp, offset: int) -> int | None:
    """The full size of the file, from Content-Range (a resumed answer) or Content-Length."""
    content_range = resp.headers.get("Content-Range", "")
    if resp.status == 206 and "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    return int(length) + offset if length and length.isdigit() else None


def _resume_point(resp, offset: int) -> int:
    """Where the body of ``resp`` starts: ``offset`` for a matching 206 answer, else 0 (start over)."""
    if resp.status != 206:
        return 0
    start = resp.headers.get("Content-Range", "").removeprefix("bytes ").split("-", 1)[0]
    return offset if start.strip() == str(offset) else 0


def _refuse_html(resp, head: bytes, url: str, label: str) -> None:
    if resp.headers.get_content_type() in ("text/html", "application/xhtml+xml") or looks_like_html(head):
        raise DownloadError(f"{_host(url)} sent a web page instead of {label} (file hosts do this for large files, "
                            f"exceeded quotas or removed links); download it in a browser and pass it with --from")


def _stream(resp, part: Path, offset: int, total: int | None, url: str, label: str, progress: bool) -> bool:
    """Append the body of ``resp`` to ``part``. False when the connection was lost before the end."""
    from tqdm.auto import tqdm

    with open(part, "ab" if offset else "wb") as out, \
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                 disable=not progress, file=sys.stderr, leave=False) as bar:
        first = offset == 0
        while True:
            try:
                chunk = resp.read(CHUNK)
            except http.client.IncompleteRead as e:     # keep what did arrive
                out.write(e.partial)
                return False
            except _CONNECTION_LOST:
                return False
            if first:
                _refuse_html(resp, chunk, url, label)
                first = False
            if not chunk:
                return True
            out.write(chunk)
            bar.update(len(chunk))


def download_file(url: str, dest: Path, *, label: str | None = None, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (kept if it is already there), resuming an earlier ``dest.part``."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    label = label or dest.name
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    resp = _open(url, offset)
    if resp is None:                      # the server cannot serve the rest: start over
        offset = 0
        resp = _open(url, 0)
    with resp:
        offset = _resume_point(resp, offset)
        total = _total_size(resp, offset)
        try:
            complete = _stream(resp, part, offset, total, url, label, progress)
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
        except OSError as e:
            part.unlink(missing_ok=True)
            if is_disk_full(e):
                raise DownloadError(f"the disk is full: {label} does not fit in {dest.parent} (partial file "
                                    f"removed); free some space or choose another --cache-dir") from None
            raise
    size = part.stat().st_size
    if not complete or (total is not None and size < total):
        of = f" of {total:,}" if total is not None else ""
        raise DownloadError(f"the download of {label} was cut short at {size:,}{of} bytes; run the same command "
                            f"again to resume it", resumable=True)
    if total is not None and size > total:
        part.unlink()
        raise DownloadError(f"{label} is larger than {_host(url)} announced ({size:,} > {total:,} bytes); removed it")
    os.replace(part, dest)
    return dest


def gdrive_download(folder_url: str, name: str, dest: Path, *, progress: bool = True) -> Path:
    """Download the file called ``name`` from a public Google Drive folder with ``gdown``."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    try:
        import gdown
    except ImportError:
        raise DownloadError("the Google Drive fallback needs gdown: pip install 'emoportraits[download]'") from None
    try:
        listing = gdown.download_folder(url=folder_url, skip_download=True, quiet=True) or []
    except Exception as e:        # gdown raises its own and requests' exception types
        raise DownloadError(f"the Google Drive folder could not be listed ({type(e).__name__}: "
                            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})", resumable=True) from None
    matches = [f for f in listing if Path(f.path).name == name]
    if not matches:
        raise DownloadError(f"{name} is not in the Google Drive folder {folder_url}")
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = gdown.download(id=matches[0].id, output=str(part), quiet=not progress, resume=True)
    except Exception as e:
        if is_disk_full(e):
            part.unlink(missing_ok=True)
            raise DownloadError(f"the disk is full: {name} does not fit in {dest.parent}") from None
        raise DownloadError(f"the Google Drive download of {name} failed ({type(e).__name__}: "
                            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})", resumable=True) from None
    if result is None or not part.is_file():
        raise DownloadError(f"the Google Drive download of {name} failed", resumable=True)
    with open(part, "rb") as f:
        if looks_like_html(f.read(1024)):
            part.unlink()
            raise DownloadError(f"Google Drive sent a web page instead of {name} (its confirmation page for large "
                                f"files or an exceeded quota); download it in a browser and pass it with --from")
    os.replace(part, dest)
    return dest
