"""The provenance and licence sections of a model converted from the authors' release.

``save_pretrained`` writes the usual card (README.md); ``write_card`` adds where every input came from
(URLs, archive and member names, sha256) and the authors' licence with what it obliges users to do,
and keeps the same record as ``provenance.json`` for programs.
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path

from .version import __version__

AUTHORS_REPOSITORY = "https://github.com/neeek2303/EMOPortraits"
LICENSE_ID = "cc-by-nc-sa-4.0"
LICENSE_URL = "https://creativecommons.org/licenses/by-nc-sa/4.0/"
# the licence section of the authors' README (neeek2303/EMOPortraits, commit 7cb8641), word for word
AUTHORS_LICENSE = ("This project is licensed under the Creative Commons BY-NC-SA 4.0 license. You are free to "
                   "use, modify, and distribute this work non-commercially, as long as appropriate credit is given "
                   "and any derivative works are licensed under identical terms.")
CITATION = ("Drobyshev et al., EMOPortraits: Emotion-enhanced Multimodal One-shot Head Avatars, CVPR 2024, "
            "arXiv:2404.19110")


def _inputs_table(provenance: dict) -> list[str]:
    rows = ["| input file | from | bytes | sha256 |", "|---|---|---|---|"]
    rows += [f"| `{i['file']}` | {i['origin']} | {i['bytes']:,} | `{i['sha256']}` |" for i in provenance["inputs"]]
    return rows


def _parts_table(provenance: dict) -> list[str]:
    rows = ["| part | file | member | sha256 of the checkpoint |", "|---|---|---|---|"]
    for title, key in (("generator (stage 1)", "generator"), ("head-pose regressor", "head_pose_regressor")):
        p = provenance[key]
        rows.append(f"| {title} | `{p['file']}` | `{p['member'] or '—'}` | `{p['sha256']}` |")
    return rows


def card_sections(provenance: dict) -> str:
    """Markdown: provenance and licence of a converted release."""
    experiment = provenance.get("experiment")
    lines = ["", "## Provenance", "",
             f"Made by `emoportraits download` (emoportraits {provenance['emoportraits']}) on "
             f"{provenance['date']} from the authors' public release ({AUTHORS_REPOSITORY}); the strict "
             f"converter mapped every official key (`emoportraits/convert.py`)."
             + (f" Experiment: `{experiment}`." if experiment else ""), ""]
    lines += _inputs_table(provenance) + [""] + _parts_table(provenance)
    lines += ["", "## Licence", "",
              "The weights are the authors' work (the conversion changes their layout, not their licence). "
              "The authors publish them with this statement:", "", f"> {AUTHORS_LICENSE}", "",
              f"That is [CC BY-NC-SA 4.0]({LICENSE_URL}). If you use or share these weights you must:", "",
              "- use them for **non-commercial** purposes only;",
              f"- give appropriate credit: cite the paper ({CITATION}) and link {AUTHORS_REPOSITORY};",
              "- indicate if you changed them, and share what you make from them (fine-tuned or converted "
              "weights included) under the same licence;",
              "- keep this card (it carries the licence and the provenance) with every copy.", "",
              "The emoportraits code that converted them is Apache-2.0; that does not change the weights' terms."]
    return "\n".join(lines) + "\n"


def write_card(folder: Path, provenance: dict) -> None:
    """Complete ``provenance`` (package version, date), append the sections to README.md, save the JSON."""
    record = {"emoportraits": __version__,
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "authors_repository": AUTHORS_REPOSITORY, "license": LICENSE_ID, "license_text": AUTHORS_LICENSE,
              **provenance}
    card = Path(folder) / "README.md"
    card.write_text(card.read_text(encoding="utf-8").rstrip("\n") + "\n" + card_sections(record), encoding="utf-8")
    (Path(folder) / "provenance.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
