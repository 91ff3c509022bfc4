"""``emoportraits download``: the authors' released model, fetched, converted and cached in one step.

The authors publish their weights in two public cloud folders (a Yandex Disk folder and a Google Drive
folder with the same files). This module fetches ``logs.zip`` (the generator) and ``repos.zip`` (the
head-pose regressor) — from Yandex Disk's public download API, else from Google Drive with ``gdown``
— or takes the archives / .pth files the user already has (``--from``), finds the two checkpoints in
them (``release_files``), converts them with the strict converter (``convert``) and writes a Hub-layout
folder with a model card that records the provenance and the authors' licence:

    $EMOPORTRAITS_HOME/official/      config.json, model.safetensors, README.md, provenance.json
    $EMOPORTRAITS_HOME/downloads/     archives while they download (removed once the model is written)

The short name ``official`` (``--model official``, ``EmoPortraits.from_pretrained("official")``)
resolves to that folder (``ensure_official``), downloading it first when it is missing.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from .convert import model_from_official
from .errors import DownloadError, EmoPortraitsError
from .fetch import download_file, gdrive_download, is_disk_full
from .release_card import write_card
from .release_files import GENERATOR_MEMBER, OFFICIAL_EXPERIMENT, find_release_parts

OFFICIAL_NAME = "official"       # the short name of the authors' released model (``bundle.resolve_model``)

# The authors' public folders, as their README gives them (github.com/neeek2303/EMOPortraits, commit
# 7cb8641, "Downloading Pre-trained Models and Dependencies"). Not reachable from where this was written:
# the file names inside (logs.zip, repos.zip at the folder root) follow that README.
YANDEX_FOLDER = "https://disk.yandex.com/d/vq-3-wlLXlc1yw"
GDRIVE_FOLDER = "https://drive.google.com/drive/folders/1xo_ceslle1kckpFhUS5j1-ZnYDVlToVL"
YANDEX_API = "https://cloud-api.yandex.net/v1/disk/public/resources/download"
RELEASE_ARCHIVES = ("logs.zip", "repos.zip")      # the generator; the dependencies (head-pose regressor)


@dataclass
class Input:
    """A file the model is made from."""
    name: str              # its name at the source (logs.zip, …)
    path: Path             # where it is on disk
    origin: str            # the URL it came from, or "local file"
    downloaded: bool       # lives in the cache's downloads/ (removed when the model is written)


def cache_home(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$EMOPORTRAITS_HOME``, else ``emoportraits/`` in the Hugging Face cache folder."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("EMOPORTRAITS_HOME"):
        return Path(os.environ["EMOPORTRAITS_HOME"]).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "emoportraits"


def cached_official(cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cached official model folder, or None when it has not been downloaded."""
    folder = cache_home(cache_dir) / OFFICIAL_NAME
    return folder if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file() else None


def yandex_link(name: str) -> str:
    """Yandex Disk's public download API for one file of the authors' folder (answers JSON with an href)."""
    query = urllib.parse.urlencode({"public_key": YANDEX_FOLDER, "path": f"/{name}"})
    return f"{YANDEX_API}?{query}"


def _cache_name(origin: str, name: str) -> str:
    """Downloads are keyed by their source, so a .part is only ever resumed from the same URL."""
    return f"{hashlib.sha1(origin.encode()).hexdigest()[:10]}-{name}"


def _url_name(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    name = Path(query.get("path", "")).name or Path(parts.path).name
    return name or "download"


def _release_archive(name: str, downloads: Path, progress: bool) -> Input:
    """One archive of the release: Yandex Disk first, Google Drive (gdown) when that fails."""
    link = yandex_link(name)
    try:
        return Input(name, download_file(link, downloads / _cache_name(link, name), label=name, progress=progress),
                     link, True)
    except DownloadError as primary:
        print(f"note: Yandex Disk failed for {name}; trying Google Drive …", file=sys.stderr)
        try:
            path = gdrive_download(GDRIVE_FOLDER, name, downloads / _cache_name(GDRIVE_FOLDER, name),
                                   progress=progress)
        except DownloadError as fallback:
            raise DownloadError(f"could not download {name}: Yandex Disk: {primary}; Google Drive: {fallback}",
                                resumable=primary.resumable or fallback.resumable) from None
        return Input(name, path, f"{GDRIVE_FOLDER} ({name})", True)


def _given(source: str, downloads: Path, progress: bool) -> Input:
    """A ``--from`` source: an http(s) URL (downloaded into the cache) or a local file (used in place)."""
    if source.startswith(("http://", "https://")):
        name = _url_name(source)
        return Input(name, download_file(source, downloads / _cache_name(source, name), label=name,
                                         progress=progress), source, True)
    path = Path(source).expanduser()
    if not path.is_file():
        raise EmoPortraitsError(f"--from {source}: no such file (give the release's logs.zip / repos.zip, a .pth "
                                f"checkpoint, or an http(s) URL)")
    return Input(path.name, path, "local file", False)


def _gather(sources: list[str] | None, downloads: Path, progress: bool) -> list[Input]:
    if sources:
        return [_given(s, downloads, progress) for s in sources]
    return [_release_archive(name, downloads, progress) for name in RELEASE_ARCHIVES]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _convert(inputs: list[Input], preset: str, experiment: str):
    """The converted model and the provenance record of its inputs."""
    generator, head_pose = find_release_parts([i.path for i in inputs], experiment)
    match = GENERATOR_MEMBER.search(generator.member or "")
    names = {i.path: i for i in inputs}

    def part(p):
        return {"file": names[p.file].name, "member": p.member, "sha256": p.sha256}

    provenance = {
        "experiment": match["experiment"] if match else None,
        "inputs": [{"file": i.name, "origin": i.origin, "sha256": _sha256(i.path),
                    "bytes": i.path.stat().st_size} for i in inputs],
        "generator": part(generator), "head_pose_regressor": part(head_pose),
    }
    model = model_from_official(
        generator.state_dict, head_pose.state_dict, preset=preset,
        source=f"the checkpoint {generator.member or generator.file.name}", license="cc-by-nc-sa-4.0",
        weights_note="the authors' released checkpoint, converted by `emoportraits download`; licensed by the "
                     "authors under CC BY-NC-SA 4.0 (non-commercial, share-alike: see Licence below).")
    return model, provenance


def _write_model(home: Path, model, provenance: dict) -> Path:
    """Save into a temporary folder beside the final one, then rename: never a half-written model."""
    home.mkdir(parents=True, exist_ok=True)
    final = home / OFFICIAL_NAME
    tmp = Path(tempfile.mkdtemp(prefix=f".{OFFICIAL_NAME}.", dir=home))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)            # mkdtemp's private 0700, made the usual mode of a new folder
    try:
        model.save_pretrained(tmp)
        write_card(tmp, provenance)
        if final.exists():               # --force: the old folder goes only once the new one is complete
            old = Path(tempfile.mkdtemp(prefix=f".{OFFICIAL_NAME}.old.", dir=home))
            os.replace(final, old / OFFICIAL_NAME)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _clean(folder: Path, everything: bool) -> None:
    """Remove the downloads (``everything``) or just the folder when nothing is left in it."""
    if everything:
        shutil.rmtree(folder, ignore_errors=True)
    elif folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def download_official(sources: list[str] | None = None, *, cache_dir: str | os.PathLike | None = None,
                      preset: str = "released", experiment: str = OFFICIAL_EXPERIMENT, force: bool = False,
                      progress: bool = True) -> Path:
    """Fetch, convert and cache the authors' released model; returns its folder (at once when cached).

    ``sources``: archives / .pth files / http(s) URLs to use instead of the authors' folders. A download
    cut short keeps its partial file and the next call resumes it; any other failure leaves nothing behind.
    """
    home = cache_home(cache_dir)
    if not force and cached_official(cache_dir):
        return home / OFFICIAL_NAME
    downloads = home / "downloads"
    try:
        inputs = _gather(sources, downloads, progress)
        print("note: converting the checkpoints …", file=sys.stderr)
        model, provenance = _convert(inputs, preset, experiment)
        folder = _write_model(home, model, provenance)
    except DownloadError as e:
        _clean(downloads, everything=not e.resumable)
        raise
    except KeyboardInterrupt:            # finished and partial downloads stay for the next call
        raise
    except BaseException as e:
        _clean(downloads, everything=True)
        if is_disk_full(e):
            raise EmoPortraitsError(f"the disk is full: the model does not fit in {home} (nothing was left "
                                    f"there); free some space or choose another --cache-dir") from None
        raise
    _clean(downloads, everything=True)
    return folder


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def ensure_official(cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The official model's folder, downloaded first when it is not cached (refused when offline)."""
    folder = cached_official(cache_dir)
    if folder:
        return folder
    where = cache_home(cache_dir) / OFFICIAL_NAME
    if _offline():
        raise EmoPortraitsError(f"the official model is not downloaded yet ({where}) and HF_HUB_OFFLINE is set: "
                                f"run `emoportraits download` once with internet")
    print(f"note: the official model is not in {where} yet: downloading the authors' release once "
          f"(as `emoportraits download` does) …", file=sys.stderr)
    try:
        return download_official(cache_dir=cache_dir, progress=progress)
    except DownloadError as e:
        raise DownloadError(f"the official model could not be downloaded ({e}); `emoportraits download` tries "
                            f"again (and resumes)", e.resumable) from None


def push_official(folder: Path, repo: str) -> str:
    """Upload the converted folder (with its card) to the Hub repo ``repo``; returns the repo URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder),
                          commit_message="EMOPortraits (authors' release, converted by emoportraits download)")
    except Exception as e:               # not logged in, offline, no write access
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise EmoPortraitsError(f"could not upload {folder} to the Hub repo {repo} ({type(e).__name__}: {first}); "
                                f"log in with `hf auth login`") from None
    return str(url)


DESCRIPTION = ("Download the authors' released model (logs.zip and repos.zip: Yandex Disk, else Google Drive), "
               "find the generator and head-pose checkpoints in them, convert them strictly and cache the result "
               "as a from_pretrained folder (config.json, model.safetensors, a model card with provenance and "
               "the authors' CC BY-NC-SA 4.0 licence). A second call finds the cached model and downloads "
               "nothing; an interrupted download resumes. The last line printed is the model folder; "
               "`--model official` then uses it everywhere.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="sources", action="append", metavar="PATH_OR_URL",
                   help="an archive (logs.zip, repos.zip) or .pth file you already have, as a local path or "
                        "http(s) URL, instead of the authors' folders; repeat for each file")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="where the model is kept (default: $EMOPORTRAITS_HOME, else emoportraits/ in the "
                        "Hugging Face cache folder)")
    p.add_argument("--experiment", default=OFFICIAL_EXPERIMENT, metavar="NAME",
                   help="which experiment of logs.zip to use when it holds several (default: the released one)")
    p.add_argument("--preset", default="released", choices=["released", "small", "tiny"],
                   help="architecture of the checkpoint (default: released, the authors' 512² model)")
    p.add_argument("--force", action="store_true", help="download and convert again even if the model is cached")
    p.add_argument("--push-to-hub", metavar="REPO",
                   help="also upload the model folder and its card to this Hub repo (needs a login)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def command(args: argparse.Namespace) -> None:
    """The body of ``emoportraits download``: notes on stderr, the folder as the last line of stdout."""
    cached = None if args.force else cached_official(args.cache_dir)
    if cached:
        print(f"note: the official model is already in {cached}; nothing to download (--force downloads and "
              f"converts it again)", file=sys.stderr)
    folder = cached or download_official(args.sources, cache_dir=args.cache_dir, preset=args.preset,
                                         experiment=args.experiment, force=args.force, progress=not args.quiet)
    if args.push_to_hub:
        print(f"note: uploading {folder} to the Hub as {args.push_to_hub} …", file=sys.stderr)
        print(f"note: pushed {push_official(folder, args.push_to_hub)}", file=sys.stderr)
    print(folder)
