"""Loader throughput and memory: the streaming loader (`StreamingPairs`, each rank/worker reading its
own shards) against the index-based one it replaces (`PairDataset` + `MixingBatchSampler`, clip i by
number through a global index), on the same prepared folder, one rank, in worker processes.

    python bench/bench_loader.py --data data/vox --batches 200 --workers 2

Each loader runs in a fresh process (so peak RSS is its own): samples/s per worker = samples made /
seconds / workers (after one warm-up batch per worker); memory = the rank's peak RSS (the main process;
workers are forked from it).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(kind: str, data: str, batches: int, workers: int, batch_size: int, resolution: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    if kind == "stream":
        from emoportraits.data.stream import PairSource, StreamingPairs
        ds = StreamingPairs([PairSource(data)], batch_size=batch_size, num_workers=workers, resolution=resolution)
        loader = DataLoader(ds, batch_size=None, num_workers=workers)
    else:
        from emoportraits.data.pairs import MixedDataset, MixingBatchSampler, PairDataset
        pairs = PairDataset(data, resolution=resolution)
        sampler = MixingBatchSampler([pairs], batch_size=batch_size, with_seeds=True)
        loader = DataLoader(MixedDataset([pairs]), batch_sampler=sampler, num_workers=workers)
    it = iter(loader)
    for _ in range(max(workers, 1)):                # warm-up: workers started, files opened
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"loader": kind, "samples_per_s_per_worker": batches * batch_size / seconds / max(workers, 1),
            "peak_rss_mb": rss, "seconds": seconds}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a prepared folder (emoportraits prepare-data)")
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--resolution", type=int, default=None, help="resize the crops (default: as stored)")
    p.add_argument("--_one", choices=["stream", "index"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._one:
        print(json.dumps(measure(args._one, args.data, args.batches, args.workers, args.batch_size,
                                 args.resolution)))
        return 0
    rows = []
    for kind in ("index", "stream"):
        out = subprocess.run([sys.executable, __file__, "--data", args.data, "--batches", str(args.batches),
                              "--workers", str(args.workers), "--batch-size", str(args.batch_size), "--_one", kind]
                             + (["--resolution", str(args.resolution)] if args.resolution else []),
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"| loader | samples/s per worker | peak RSS per rank (MB) |  ({args.workers} workers, batch "
          f"{args.batch_size}, {args.batches} batches, {args.data})")
    print("|---|---|---|")
    names = {"index": "index-based (PairDataset + MixingBatchSampler)", "stream": "streaming (StreamingPairs)"}
    for r in rows:
        print(f"| {names[r['loader']]} | {r['samples_per_s_per_worker']:.1f} | {r['peak_rss_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
