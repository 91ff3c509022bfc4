"""Synthetic releases of the authors' weights, and a local server that hands them out like their hosts.

Weights come from ../shared/parity/fill_rule.py under the *official* key names. The released preset's
names and shapes are the fixture's listing; a smaller preset keeps those names for every tensor it
has (the converter's mapping, run backwards), with the smaller shapes, so the download → convert →
load path is exercised in a fraction of a second.

``ReleaseServer`` serves files on 127.0.0.1 as ``/files/NAME`` (with HTTP Range requests), answers
``/api/download?public_key=…&path=/NAME`` with JSON ``{"href": …}`` like Yandex Disk's public
download API, and can cut a download short or send a web page instead of a file.
"""
from __future__ import annotations

import io
import json
import math
import re
import socket
import threading
import zipfile
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import torch

import parity
from emoportraits import EmoPortraits, EmoPortraitsConfig
from emoportraits import convert
from emoportraits.release_files import OFFICIAL_EXPERIMENT

# what Google Drive sends instead of a large file: a page asking to confirm the download
DRIVE_PAGE = (b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
              b"Google Drive can't scan this file for viruses. <form>Download anyway</form></body></html>")
_HEAD_POSE_BACK = [(r"(?<![^.])norm(\d)\.", r"bn\1."), (r"(?<![^.])downsample\.conv\.", "downsample.0."),
                   (r"(?<![^.])downsample\.norm\.", "downsample.1.")]


def _ours_to_official(generator_shapes: dict) -> dict[str, str]:
    """Our key → the official key it comes from (``weight_orig`` for spectral-norm layers)."""
    out = {}
    for key in generator_shapes:
        if key.endswith(("weight_u", "weight_v")) or key in convert.UNUSED_OFFICIAL_KEYS \
                or convert._CONSTANT_KEYS.match(key):
            continue
        folded = key[: -len("_orig")] if key.endswith("weight_orig") else key
        out[convert._rename(folded)] = key
    return out


def _official_name(ours: str, official_of: dict[str, str]) -> str:
    if ours in official_of:
        return official_of[ours]
    # a residual block whose released twin needs no skip conv: name it like its main-branch conv
    assert ours.endswith(".skip.weight"), f"no official name for {ours}"
    twin = official_of[ours[: -len("skip.weight")] + "conv2.weight"]
    return twin[: -len("block.0.weight_orig")] + "skip.0.weight_orig"


def _head_pose_name(ours: str) -> str:
    rest = ours.removeprefix("head_pose_net.").removeprefix("trunk.")
    for pattern, replacement in _HEAD_POSE_BACK:
        rest = re.sub(pattern, replacement, rest)
    assert convert._rename_head_pose(rest) == ours, ours
    return rest


@lru_cache(maxsize=4)
def official_shapes(preset: str) -> tuple[dict, dict]:
    """(generator key → shape, head-pose key → shape) under the official names, for ``preset``."""
    generator, head_pose = parity.official_shapes()
    if preset == "released":
        return generator, head_pose
    official_of = _ours_to_official(generator)
    # constants and unused entries keep their released shapes: the converter checks their values only
    shapes = {k: s for k, s in generator.items()
              if k in convert.UNUSED_OFFICIAL_KEYS or convert._CONSTANT_KEYS.match(k)}
    hp_shapes = {}
    for ours, tensor in EmoPortraits(EmoPortraitsConfig.preset(preset)).state_dict().items():
        shape = tuple(tensor.shape)
        if ours.startswith("head_pose_net."):
            hp_shapes[_head_pose_name(ours)] = shape
            continue
        official = _official_name(ours, official_of)
        shapes[official] = shape
        if official.endswith("weight_orig"):
            prefix = official[: -len("weight_orig")]
            shapes[prefix + "weight_u"], shapes[prefix + "weight_v"] = (shape[0],), (math.prod(shape[1:]),)
    return shapes, hp_shapes


@lru_cache(maxsize=2)
def official_state_dicts(preset: str) -> tuple[dict, dict]:
    """Fill-rule weights under the official names: (generator, head-pose regressor)."""
    if preset == "released":
        return parity.official_state_dicts()
    rule = parity.fill_rule()
    generator, head_pose = official_shapes(preset)
    return rule.fill_state_dict(generator), rule.fill_state_dict(head_pose)


def torch_bytes(state_dict: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


def write_logs_zip(path: Path, generator: dict | None, *, experiments=(OFFICIAL_EXPERIMENT,), older_epoch=True,
                   compression=zipfile.ZIP_DEFLATED) -> Path:
    """``logs/<experiment>/{args.txt, checkpoints/<N>_model.pth}`` as the authors' logs.zip lays it out.
    ``older_epoch`` adds an unreadable earlier checkpoint: only the newest may be chosen."""
    data = torch_bytes(generator) if generator is not None else None
    with zipfile.ZipFile(path, "w", compression) as z:
        for experiment in experiments:
            z.writestr(f"logs/{experiment}/args.txt", f"python3 train.py --experiment_name {experiment}\n")
            if data is None:
                continue
            if older_epoch:
                z.writestr(f"logs/{experiment}/checkpoints/099_model.pth", b"an older, broken checkpoint")
            z.writestr(f"logs/{experiment}/checkpoints/100_model.pth", data)
    return path


def write_repos_zip(path: Path, head_pose: dict | None, *, compression=zipfile.ZIP_DEFLATED) -> Path:
    """The dependency archive: other repositories and their weights, and repos/head_pose_regressor.pth."""
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr("repos/face_parsing/README.md", "a face parser\n")
        z.writestr("repos/face_parsing/weights/rtnet50.pth", torch_bytes({"encoder.weight": torch.ones(2, 2)}))
        if head_pose is not None:
            z.writestr("repos/head_pose_regressor.pth", torch_bytes(head_pose))
    return path


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):          # keep the test output clean
        pass

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        release: ReleaseServer = self.server.release
        parts = urlsplit(self.path)
        release.requests.append((parts.path, self.headers.get("Range")))
        if parts.path == "/api/download":
            name = parse_qs(parts.query).get("path", [""])[0].lstrip("/")
            if name not in release.files:
                body = {"error": "DiskNotFoundError", "description": "Resource not found."}
                return self._send(404, json.dumps(body).encode(), "application/json")
            body = {"href": f"{release.base}/files/{name}", "method": "GET", "templated": False}
            return self._send(200, json.dumps(body).encode(), "application/json")
        name = parts.path.removeprefix("/files/")
        if name in release.html:
            return self._send(200, DRIVE_PAGE, "text/html; charset=utf-8")
        if name not in release.files:
            return self._send(404, b"not found", "text/plain")
        self._send_file(release, name)

    def _send_file(self, release: "ReleaseServer", name: str) -> None:
        data = release.files[name].read_bytes()
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and int(match[1]) >= len(data):
            return self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(data)}"})
        if match:
            start = int(match[1])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        end = release.cut.pop(name, len(data))           # a cut happens once, at that byte of the file
        self.wfile.write(data[start:max(start, end)])
        self.wfile.flush()
        self.close_connection = True


class ReleaseServer:
    """Serve ``files`` (name → path) on 127.0.0.1 in a thread; use as a context manager."""

    def __init__(self, files: dict[str, Path]):
        self.files = dict(files)
        self.cut: dict[str, int] = {}        # name → byte at which the next download of it stops
        self.html: set[str] = set()          # names answered with a web page
        self.requests: list[tuple[str, str | None]] = []     # (path, Range header)

    def __enter__(self) -> "ReleaseServer":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.release = self
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, name: str) -> str:
        return f"{self.base}/files/{name}"

    @property
    def api(self) -> str:
        return f"{self.base}/api/download"

    def api_url(self, name: str) -> str:
        return f"{self.api}?{urlencode({'public_key': 'https://disk.yandex.com/d/test', 'path': '/' + name})}"


def closed_port_url() -> str:
    """An address on 127.0.0.1 where nothing listens: what an unreachable host looks like."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/download"
