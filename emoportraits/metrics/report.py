"""Markdown tables in the layout of the paper's tables, and PNG image grids."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..media import save_image
from ..media.crop import resize


@dataclass
class Column:
    key: str                  # the metric's key in a row dict
    header: str               # e.g. "PSNR ↑"
    fmt: str = "{:.3f}"


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return fmt.format(value) if isinstance(value, (int, float, np.floating)) else str(value)


def markdown_table(rows: list[dict], columns: list[Column], first: str = "Method") -> str:
    """One row per method (``row["method"]``), one column per metric; missing metrics are n/a."""
    lines = ["| " + " | ".join([first] + [c.header for c in columns]) + " |",
             "|" + "|".join(["---"] + ["---:"] * len(columns)) + "|"]
    for row in rows:
        lines.append("| " + " | ".join([str(row["method"])] + [_cell(row.get(c.key), c.fmt) for c in columns]) + " |")
    return "\n".join(lines)


def mean(values) -> float:
    """Mean of the finite values, NaN when there are none (a metric that could not be computed)."""
    v = np.asarray([x for x in np.ravel(np.asarray(values, np.float64)) if np.isfinite(x)] or [np.nan])
    return float(v.mean())


def image_grid(cells: list[list[np.ndarray | None]], size: int = 128, pad: int = 2) -> np.ndarray:
    """Rows × columns of uint8 RGB images (None = blank), each resized to size², on a white canvas."""
    n_rows, n_cols = len(cells), max(len(r) for r in cells)
    canvas = np.full((n_rows * (size + pad) + pad, n_cols * (size + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(cells):
        for j, im in enumerate(row):
            if im is None:
                continue
            y, x = pad + i * (size + pad), pad + j * (size + pad)
            canvas[y:y + size, x:x + size] = resize(np.ascontiguousarray(im[..., :3]), (size, size))
    return canvas


def write_report(out: str | Path, name: str, title: str, sections: list[tuple[str, str]], notes: list[str],
                 grid: np.ndarray | None = None, command: str | None = None) -> Path:
    """``out/name.md`` with a title, the tables (heading, table) and notes; ``out/name.png`` with the grid."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = [f"# {title}", ""]
    if command:
        text += ["```", command, "```", ""]
    for heading, table in sections:
        text += [f"## {heading}", "", table, ""]
    if grid is not None:
        save_image(grid, out / f"{name}.png")
        text += [f"![grid]({name}.png)", ""]
    if notes:
        text += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    path = out / f"{name}.md"
    path.write_text("\n".join(text))
    return path
