"""Training configuration: dataclasses, read from YAML, overridable from the command line.

    cfg = TrainConfig.from_yaml("train/configs/tiny.yaml", overrides=["optim.max_steps=50"])

Defaults follow the authors' released configuration (SPEC §3); paper values are options
(``losses: {preset: paper}``). Unknown keys are errors: a typo must not silently train something else.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DataSource:
    path: str                        # a folder written by `emoportraits prepare-data`
    name: str = "voxceleb2"          # "voxceleb2" / "feed": FEED pairs get the ×10 L_sdm weight
    weight: float = 1.0              # sampling share (the released mixture is 0.75 / 0.25)
    pair_jitter: float = 0.0         # one colour jitter on source and driver alike (small data sets)


@dataclass
class ModelSection:
    preset: str = "released"
    overrides: dict = field(default_factory=dict)   # EmoPortraitsConfig fields to change
    init_from: str | None = None     # a from_pretrained folder / Hub repo / "official" to fine-tune from
    freeze: list = field(default_factory=list)      # modules kept fixed (names or groups, see FREEZE_GROUPS)


@dataclass
class OptimSection:
    max_steps: int = 250_000
    epoch_len: int = 15_000          # iterations per "epoch" (the released run); L_head starts at epoch 10
    max_minutes: float | None = None  # wall-clock budget: stop (checkpoint + export) when it is spent
    batch_size: int = 2              # per process (8 GPUs × 2 = 16 in the released run)
    grad_accum: int = 1
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    min_lr_g: float = 1e-6           # cosine schedule floors (released run)
    min_lr_d: float = 4e-6
    warmup_steps: int = 0
    betas: tuple = (0.5, 0.999)
    weight_decay: float = 1e-2
    grad_clip: float | None = None
    ema: bool = False
    ema_decay: float = 0.999


@dataclass
class RunLogSection:
    """The ``log`` keys every training script has; a script subclasses it to change a default (a field
    redeclared in a subclass keeps its place, so the saved config.yaml keeps its key order)."""
    output_dir: str = "runs/emoportraits"
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    tracker: str | None = "tensorboard"      # any Accelerate tracker name, or None


@dataclass
class LogSection(RunLogSection):
    sample_every: int = 500                  # the main model's tracker images


@dataclass
class WhisperSection:
    """The audio features of the speech-driven trainings (train_speech.py, train_pose.py)."""
    model: str = "openai/whisper-tiny"   # Hub id or local folder
    batch_size: int = 8


class TrainConfigMixin:
    """YAML (de)serialisation for a top-level training config dataclass."""

    @classmethod
    def from_dict(cls, data: dict):
        return build_dataclass(cls, data, "config")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, overrides: list[str] = ()):
        return load_config(cls, path, overrides)

    def save_yaml(self, path: str | Path) -> None:
        save_config(self, path)


@dataclass
class TrainConfig(TrainConfigMixin):
    model: ModelSection = field(default_factory=ModelSection)
    data: list = field(default_factory=list, metadata={"item": DataSource})
    optim: OptimSection = field(default_factory=OptimSection)
    log: LogSection = field(default_factory=LogSection)
    losses: dict = field(default_factory=dict)          # LossWeights fields (+ "preset": released|paper)
    networks: dict = field(default_factory=dict)        # LossNetworks fields: files of the loss networks
    mixed_precision: str = "no"                         # no | fp16 | bf16 (passed to Accelerate)
    seed: int = 0
    green_background: bool = True     # targets composited on green, as the released model was trained
    mix_every: int = 2                # every second batch mixes the two datasets (SPEC §3)
    num_workers: int = 0
    stream_buffer: int = 32           # clips in each stream's shuffle buffer (per data set, rank and worker)
    ddp_find_unused: Any = "auto"     # DDP find_unused_parameters: auto (checked once), true or false


def parse_config_args(cls, argv, description: str, example: str = "train/configs/", options: dict | None = None):
    """``--config FILE [section.key=value …]`` → a config dataclass; bad files and overrides end the
    program with a one-line usage error (argparse), not a traceback. ``options``: extra flags as
    shorthands of overrides, ``{"--init-from": ("model.init_from", help)}``."""
    import argparse

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help=f"YAML configuration (see {example})")
    for flag, (_, text) in (options or {}).items():
        parser.add_argument(flag, metavar="VALUE", help=text)
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides of the configuration")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    for flag, (key, _) in (options or {}).items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            overrides.append(f"{key}={value}")
    try:
        return parser, args, load_config(cls, args.config, overrides)
    except (ValueError, OSError) as e:
        parser.error(str(e))


def load_config(cls, path: str | Path | None = None, overrides=()):
    """A config dataclass from a YAML file plus ``section.key=value`` overrides (values parsed as YAML)."""
    import yaml

    data = (yaml.safe_load(Path(path).read_text()) if path else {}) or {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like section.key=value")
        _set_path(data, key.strip(), yaml.safe_load(value))
    return build_dataclass(cls, data, "config")


def save_config(config, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


def _set_path(data: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.c`` (list items by index: ``data.0.path``) in nested dicts/lists."""
    *parents, leaf = dotted.split(".")
    node: Any = data
    for p in parents:
        if isinstance(node, list):
            if not p.isdigit() or int(p) >= len(node):
                raise ValueError(f"override {dotted!r}: no item {p} in a list of {len(node)}")
            node = node[int(p)]
        elif isinstance(node, dict):
            node = node.setdefault(p, {})
        else:
            raise ValueError(f"override {dotted!r}: {p} is not a section")
    if isinstance(node, list):
        if not leaf.isdigit() or int(leaf) >= len(node):
            raise ValueError(f"override {dotted!r}: no item {leaf} in a list of {len(node)}")
        node[int(leaf)] = value
    elif isinstance(node, dict):
        node[leaf] = value
    else:
        raise ValueError(f"override {dotted!r}: cannot set a key inside a value")


def build_dataclass(cls, data: Any, where: str):
    """Dataclass from a dict, recursively, rejecting unknown keys with their full path. A field whose
    default is a dataclass is built from its sub-dict; a list field with ``metadata={"item": Cls}``
    from a list of sub-dicts; YAML lists become tuples where the default is a tuple."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        item = f.metadata.get("item")
        if item is not None:
            if not isinstance(value, list):
                raise ValueError(f"{where}.{name} must be a list")
            value = [build_dataclass(item, v, f"{where}.{name}[{i}]") for i, v in enumerate(value)]
        elif dataclasses.is_dataclass(default):
            value = build_dataclass(type(default), value, f"{where}.{name}")
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)
