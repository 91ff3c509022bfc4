"""Benchmark EmoPortraits inference: latency, throughput, peak memory and MAC counts.

Per (device, dtype) variant it times ``encode_source`` (the once-per-avatar work) and ``drive``
with a driver image (the per-frame work, including the driver's head pose and expression), and
records peak memory. It then counts multiply-accumulates per top-level submodule for one image.
Weights are random: the timings do not depend on them. Run with ``--help`` for the options.
"""
from __future__ import annotations

import argparse
import math
import resource
import statistics
import sys
import time

import torch
from torch import nn

from emoportraits import EmoPortraits, EmoPortraitsConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv=None) -> argparse.Namespace:
    default_devices = "cpu,cuda" if torch.cuda.is_available() else "cpu"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="released", choices=EmoPortraitsConfig.PRESETS,
                   help="architecture preset; its image_size is the resolution (default: released, 512²)")
    p.add_argument("--devices", default=default_devices,
                   help="comma-separated devices among cpu, cuda, mps (default: %(default)s)")
    p.add_argument("--dtypes", default="fp32,bf16",
                   help=f"comma-separated dtypes among {', '.join(DTYPES)} (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per variant (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for CPU runs (default: leave PyTorch's setting)")
    p.add_argument("--batch", type=int, default=1, help="images per encode_source/drive call (default: 1)")
    p.add_argument("--macs", action=argparse.BooleanOptionalAction, default=True,
                   help="count MACs per module for one fp32 image on CPU (default: on)")
    args = p.parse_args(argv)
    args.devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in args.dtypes:
        if d not in DTYPES:
            p.error(f"unknown dtype {d!r}; choose among {', '.join(DTYPES)}")
    if args.repeats < 1 or args.warmup < 0 or args.batch < 1:
        p.error("--repeats and --batch must be >= 1, --warmup >= 0")
    return args


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    elif device == "mps":
        torch.mps.synchronize()


def peak_rss_mib() -> float:
    """Process peak resident set size (a high-water mark): ru_maxrss is KiB on Linux, bytes on macOS."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def build_model(config: EmoPortraitsConfig, device: str, dtype: torch.dtype) -> EmoPortraits:
    torch.manual_seed(0)
    return EmoPortraits(config).to(device=device, dtype=dtype).eval()


def images(config: EmoPortraitsConfig, batch: int, device: str, dtype: torch.dtype):
    """A random source and driver in [0, 1] (rounding to bf16/fp16 keeps them in range)."""
    g = torch.Generator().manual_seed(1)
    shape = (batch, 3, config.image_size, config.image_size)
    return [torch.rand(shape, generator=g).to(device, dtype) for _ in range(2)]


def bench_variant(config, args, device: str, dtype_name: str) -> dict:
    """Time one (device, dtype) variant; raises RuntimeError if the device cannot run it."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available")
    if device == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("MPS is not available")
    dtype = DTYPES[dtype_name]
    model = build_model(config, device, dtype)
    source, driver = images(config, args.batch, device, dtype)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)   # the peak below includes the weights
    rss_before = peak_rss_mib()

    def timed(fn):
        synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        synchronize(device)
        return time.perf_counter() - t0, out

    with torch.inference_mode():
        for _ in range(args.warmup):
            avatar = model.encode_source(source)
            model.drive(avatar, driver)
        src_times, drv_times = [], []
        for _ in range(args.repeats):
            t, avatar = timed(lambda: model.encode_source(source))
            src_times.append(t)
            drv_times.append(timed(lambda: model.drive(avatar, driver))[0])

    if device.startswith("cuda"):
        memory = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} (CUDA alloc)"
    elif device == "cpu":
        peak = peak_rss_mib()
        memory = f"{peak:.0f} (RSS, +{peak - rss_before:.0f})"
    else:
        memory = "n/a"
    del model, avatar
    per_frame = statistics.median(drv_times)
    return {"src": f"{statistics.median(src_times):.4f} / {min(src_times):.4f}",
            "drv": f"{per_frame:.4f} / {min(drv_times):.4f}",
            "fps": f"{args.batch / per_frame:.2f}", "mem": memory}


def count_macs(config: EmoPortraitsConfig) -> dict[str, dict[str, int]]:
    """MACs per top-level submodule for one fp32 image on CPU, split into source and driver side."""
    model = build_model(config, "cpu", torch.float32)
    macs: dict[str, dict[str, int]] = {}
    phase = ["source"]   # which call is running; the hooks read it

    def hook(top: str, module: nn.Module, _inputs, out: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            n = out.numel() * module.in_features
        else:   # Conv2d/Conv3d and their subclasses (WSConv2d/WSConv3d)
            n = out.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
        per_module = macs.setdefault(top, {"source": 0, "driver": 0})
        per_module[phase[0]] += n

    handles = [m.register_forward_hook(lambda mod, i, o, top=name.split(".")[0]: hook(top, mod, i, o))
               for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear))]
    source, driver = images(config, 1, "cpu", torch.float32)
    with torch.inference_mode():
        avatar = model.encode_source(source)
        phase[0] = "driver"
        model.drive(avatar, driver)
    for h in handles:
        h.remove()
    return macs


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = EmoPortraitsConfig.preset(args.preset)
    model = build_model(config, "cpu", torch.float32)
    n_gen, n_pose = model.generator_parameters(), sum(p.numel() for p in model.head_pose_net.parameters())
    del model
    print(f"EmoPortraits preset={args.preset}  image {config.image_size}²  batch {args.batch}  "
          f"torch {torch.__version__}  CPU threads {torch.get_num_threads()}")
    print(f"parameters: generator {n_gen:,}  head-pose net {n_pose:,}  total {n_gen + n_pose:,}\n")

    rows, notes = [], []
    for device in args.devices:
        for dtype_name in args.dtypes:
            name = f"{device}/{dtype_name}"
            print(f"running {name} ...", flush=True)
            try:
                r = bench_variant(config, args, device, dtype_name)
                rows.append([name, r["src"], r["drv"], r["fps"], r["mem"]])
            except RuntimeError as e:   # e.g. a dtype the device has no kernels for
                reason = str(e).strip().splitlines()[0][:80] if str(e).strip() else type(e).__name__
                rows.append([name, "n/a", "n/a", "n/a", "n/a"])
                notes.append(f"{name}: n/a ({reason})")
    print(f"\nLatency in seconds, median / min over {args.repeats} repeats after {args.warmup} warm-up "
          f"(batch {args.batch}); frames/s = batch / per-frame median.")
    print_table(["variant", "per-source s", "per-frame s", "frames/s", "peak memory MiB"], rows)
    for note in notes:
        print(note)
    print("CPU memory is the process peak RSS (a high-water mark over the whole run, so a variant that\n"
          "needs less than an earlier one shows +0); CUDA memory is max_memory_allocated incl. weights.")

    if args.macs:
        print(f"\nMACs for one {config.image_size}² image (fp32, CPU; Conv2d/Conv3d/Linear only), in G:")
        macs = count_macs(config)
        rows = [[m, f"{v['source'] / 1e9:.3f}", f"{v['driver'] / 1e9:.3f}"] for m, v in macs.items()]
        totals = [sum(v[k] for v in macs.values()) / 1e9 for k in ("source", "driver")]
        rows.append(["total", f"{totals[0]:.3f}", f"{totals[1]:.3f}"])
        print_table(["module", "encode_source GMAC", "drive GMAC (per frame)"], rows)


if __name__ == "__main__":
    main()
