"""Find the authors' generator checkpoint and head-pose regressor in release archives or .pth files.

The release is two zip archives: ``logs.zip`` holds ``logs/<experiment>/checkpoints/<N>_model.pth``
(and ``args.txt``), the dependency archive ``repos.zip`` holds ``head_pose_regressor.pth`` among other
repositories' weights. Archives are read in place: only the chosen members are read (into memory),
nothing is extracted. Members are chosen by name pattern and confirmed by content (their state_dict
keys), so a moved or renamed file is still found and a wrong file is refused.
"""
from __future__ import annotations

import hashlib
import io
import re
import zipfile
import zlib
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from .errors import EmoPortraitsError
from .fetch import looks_like_html
from .state_dict import read_state_dict

# the experiment the authors' README (neeek2303/EMOPortraits, "Note 4: Model Weights") names as released
OFFICIAL_EXPERIMENT = "Retrain_with_17_V1_New_rand_MM_SEC_4_drop_02_stm_10_CV_05_1_1"

GENERATOR_MEMBER = re.compile(r"(?:^|/)(?P<experiment>[^/]+)/checkpoints/(?P<epoch>\d+)_model\.pth$")
HEAD_POSE_MEMBER = re.compile(r"(?:^|/)head_pose_regressor[^/]*\.pth?$")
CHECKPOINT_SUFFIXES = (".pth", ".pt")
# a ResNet-18 is ~45 MB: larger .pth files of the dependency archive are not read to look for it
HEAD_POSE_SCAN_LIMIT = 200 << 20
# a torch checkpoint is itself a zip, with one top folder holding data.pkl
_TORCH_RECORD = re.compile(r"^[^/]+/data\.pkl$")
_GENERATOR_PREFIXES = ("local_encoder_nw.", "decoder_nw.", "volume_process_nw.", "idt_embedder_nw.")


@dataclass
class Part:
    """One state_dict of the release and where it came from."""
    state_dict: dict
    file: Path                 # the archive or .pth file it was read from
    member: str | None         # its name inside the archive (None: the file itself)
    sha256: str                # of the checkpoint bytes (the member, or the file)


def classify(state_dict: dict) -> str | None:
    """``"generator"`` (the authors' stage-1 model), ``"head_pose"`` (a ResNet-18 with 9 outputs) or None."""
    if any(k.startswith(_GENERATOR_PREFIXES) for k in state_dict):
        return "generator"
    fc = state_dict.get("fc.weight")
    if fc is not None and fc.shape[0] == 9 and "conv1.weight" in state_dict \
            and any(k.startswith("layer4.") for k in state_dict):
        return "head_pose"
    return None


def _describe(state_dict: dict) -> str:
    keys = list(state_dict)
    return f"{len(keys)} entries, e.g. {', '.join(keys[:3])}" if keys else "no entries"


def _read_checkpoint(data: bytes, label: str) -> Part:
    return Part(read_state_dict(io.BytesIO(data), label), Path(), None, hashlib.sha256(data).hexdigest())


def _file_kind(path: Path) -> str:
    """``"archive"`` (a zip of files) or ``"checkpoint"`` (a .pth file, torch zip or legacy pickle)."""
    with open(path, "rb") as f:
        head = f.read(1024)
    if looks_like_html(head):
        raise EmoPortraitsError(f"{path.name} is a web page (HTML), not an archive or checkpoint; the file host "
                                f"sent a page instead of the file: download it in a browser and pass it with --from")
    if head.startswith(b"\x80"):           # a pickle: torch's legacy (non-zip) checkpoint format
        return "checkpoint"
    if not head.startswith(b"PK"):
        raise EmoPortraitsError(f"{path.name} is neither a zip archive (logs.zip, repos.zip) nor a PyTorch "
                                f"checkpoint (.pth)")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise EmoPortraitsError(f"{path.name} is not a readable zip archive (corrupt or incomplete: {e})") from None
    return "checkpoint" if any(_TORCH_RECORD.match(n) for n in names) else "archive"


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive: Path) -> Part:
    label = f"{archive.name}:{info.filename}"
    try:
        data = zf.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as e:
        raise EmoPortraitsError(f"{label} could not be read: the archive is corrupt ({e})") from None
    part = _read_checkpoint(data, label)
    part.file, part.member = archive, info.filename
    return part


def _pick_generator(members, experiment: str, names: str):
    """The newest checkpoint of the one experiment, or of ``experiment`` when there are several."""
    experiments = sorted({m["experiment"] for _, _, m in members})
    if not experiments:
        raise EmoPortraitsError(f"no generator checkpoint (<experiment>/checkpoints/<N>_model.pth) in {names}; "
                                f"pass the release's logs.zip")
    if len(experiments) > 1 and experiment not in experiments:
        raise EmoPortraitsError(f"{names} hold several experiments ({', '.join(experiments)}) and none is "
                                f"{experiment}; choose one with --experiment NAME")
    chosen = experiment if len(experiments) > 1 else experiments[0]
    return max((x for x in members if x[2]["experiment"] == chosen), key=lambda x: int(x[2]["epoch"]))


def _generator_from_archives(archives, experiment: str, names: str) -> Part:
    members = [(archive, info, m) for archive in archives for info in archive[0].infolist()
               if (m := GENERATOR_MEMBER.search(info.filename))]
    (zf, path), info, _ = _pick_generator(members, experiment, names)
    part = _read_member(zf, info, path)
    if classify(part.state_dict) != "generator":
        raise EmoPortraitsError(f"{path.name}:{info.filename} is not the EMOPortraits generator "
                                f"({_describe(part.state_dict)})")
    return part


def _head_pose_from_archives(archives, names: str) -> Part:
    """By name first (head_pose_regressor*.pth), then any small enough .pth whose keys fit."""
    named, others = [], []
    for zf, path in archives:
        for info in zf.infolist():
            if HEAD_POSE_MEMBER.search(info.filename):
                named.append((zf, path, info))
            elif info.filename.endswith(CHECKPOINT_SUFFIXES) and not GENERATOR_MEMBER.search(info.filename) \
                    and info.file_size <= HEAD_POSE_SCAN_LIMIT:
                others.append((zf, path, info))
    for zf, path, info in named + others:
        part = _read_member(zf, info, path)
        if classify(part.state_dict) == "head_pose":
            return part
    raise EmoPortraitsError(f"no head-pose regressor (head_pose_regressor.pth: a ResNet-18 with 9 outputs) in "
                            f"{names}; the release ships it in repos.zip: pass that with --from")


def find_release_parts(files: list[Path], experiment: str = OFFICIAL_EXPERIMENT) -> tuple[Part, Part]:
    """(generator, head-pose regressor) from release archives and/or .pth files, in any order."""
    direct: dict[str, Part] = {}
    archive_paths = []
    for path in map(Path, files):
        if _file_kind(path) == "archive":
            archive_paths.append(path)
            continue
        with open(path, "rb") as f:
            part = _read_checkpoint(f.read(), path.name)
        part.file = path
        kind = classify(part.state_dict)
        if kind is None:
            raise EmoPortraitsError(f"{path.name} is neither the EMOPortraits generator nor the head-pose regressor "
                                    f"({_describe(part.state_dict)})")
        direct.setdefault(kind, part)
    names = ", ".join(p.name for p in archive_paths) or "the given files"
    with ExitStack() as stack:
        archives = [(stack.enter_context(zipfile.ZipFile(p)), p) for p in archive_paths]
        generator = direct.get("generator") or _generator_from_archives(archives, experiment, names)
        head_pose = direct.get("head_pose") or _head_pose_from_archives(archives, names)
    return generator, head_pose
