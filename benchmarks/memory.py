"""Peak RSS of a tiny run, and evidence that it does not grow with corpus size.

    python -m benchmarks.memory [--steps 40] [--scales 1 8 64] [--threads 1]
                                [--out benchmarks/results/memory.json]

Every measurement is a fresh subprocess that reports its own ``resource.getrusage(RUSAGE_SELF)
.ru_maxrss`` (peak resident set, KiB on Linux) at exit, so nothing from this process leaks in.

1. ``tiny_run``: the tiny preset (``configs/tiny.yaml``) for ``--steps`` steps with an eval and a
   checkpoint every ``steps // 2`` (so every phase that allocates - training, validation loss, the
   interpretability metrics on 4,096 tokens at every site, checkpoint writing - runs at least
   twice). Target: <= 1.5 GiB.
2. ``corpus_scaling``: the same run on token caches of 1x, 8x and 64x the bundled training
   stories, each in its own cache dir (``data.cache_dir``):
   * 1x - the bundled sample, tokenized normally;
   * 8x - *really tokenized*: a subprocess tokenizes the bundled train stories repeated 8 times
     through the normal ``load_tokens`` path (its own peak RSS is reported too: building the cache
     holds the token lists in RAM once);
   * 64x - the 8x token file tiled 8 more times on disk (no tokenizer run; same meta.json with
     the new length). The vocabulary remap is identical at every scale (repeating the corpus
     scales every count alike).
   The training runs then memory-map ``train.bin``. Each child samples ``/proc/self/status``
   (RssAnon, RssFile) and the ``train.bin`` mapping's Rss in ``/proc/self/smaps`` while it
   trains, so the peak splits into anonymous memory (heap, tensors: what must stay flat) and
   clean file-backed pages of the token file (page cache mapped into the process: reclaimable,
   and bounded by the file size and by how much of it the sampled blocks touched - on kernels
   with large page-cache folios, e.g. ext4 on Linux >= 6.16, one random 258-byte block read maps
   up to hundreds of KiB around it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

# Not benchmarks.common (it imports torch): a child's ru_maxrss starts at this process's peak
# (Linux carries the parent's high-water mark across fork/exec), so this process stays light.
REPO = Path(__file__).resolve().parents[1]
GIB = 1024**3

_CHILD_PRELUDE = textwrap.dedent(
    """
    import json, resource, time
    """
)

_TRAIN_CHILD = _CHILD_PRELUDE + textwrap.dedent(
    """
    import re, threading
    import torch
    torch.set_num_threads({threads})
    from tti_ray.config import load_config
    from tti_ray.data import load_tokens
    from tti_ray.train import train_run

    # Split the resident set while training: anonymous memory (heap, tensors) vs file-backed
    # pages, and among those the pages of the memory-mapped train.bin.
    peak = {{"anon_kib": 0, "file_kib": 0, "train_bin_kib": 0}}
    stop = threading.Event()

    def train_bin_rss():
        total, in_bin = 0, False
        with open("/proc/self/smaps") as f:
            for line in f:
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    in_bin = line.rstrip().endswith("/train.bin")
                elif in_bin and line.startswith("Rss:"):
                    total += int(line.split()[1])
        return total

    def sample():
        tick = 0
        while True:
            with open("/proc/self/status") as f:
                status = f.read()
            for key, field in (("anon_kib", "RssAnon"), ("file_kib", "RssFile")):
                kib = int(re.search(field + r":\\s+(\\d+)", status).group(1))
                peak[key] = max(peak[key], kib)
            if tick % 10 == 0:  # smaps is slower to read; train.bin pages only ever grow
                peak["train_bin_kib"] = max(peak["train_bin_kib"], train_bin_rss())
            tick += 1
            if stop.wait(0.05):
                return

    cfg = load_config({config!r}, {sets!r})
    tokens = load_tokens(cfg.data)
    n_tokens, n_bytes = int(len(tokens.train)), int(tokens.train.nbytes)
    del tokens
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.time()
    final = train_run(cfg, None, {out!r})
    seconds = time.time() - t0
    stop.set()
    sampler.join()
    print(json.dumps({{
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "peak_anon_kib": peak["anon_kib"], "peak_file_kib": peak["file_kib"],
        "peak_train_bin_resident_kib": peak["train_bin_kib"],
        "status": final["status"], "steps": final["step"],
        "train_tokens": n_tokens, "train_bin_bytes": n_bytes,
        "val_perplexity": final["val/perplexity"], "train_seconds": seconds,
    }}))
    """
)

_BUILD_CHILD = _CHILD_PRELUDE + textwrap.dedent(
    """
    import tti_ray.data.tokens as tokens_mod
    from tti_ray.config import DataConfig
    real = tokens_mod.story_batches  # what the cache build reads (streamed, batch by batch)
    def repeated(cfg, split, batch=2048):
        for _ in range({scale} if split == "train" else 1):
            yield from real(cfg, split, batch)
    tokens_mod.story_batches = repeated
    t0 = time.time()
    td = tokens_mod.load_tokens(DataConfig(cache_dir={cache!r}))
    print(json.dumps({{
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "train_tokens": int(len(td.train)), "seconds": time.time() - t0,
        "directory": str(td.directory),
    }}))
    """
)


def _child(code: str) -> dict[str, Any]:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"child failed ({r.returncode}):\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["maxrss_mib"] = round(out["maxrss_kib"] / 1024, 1)
    return out


def _train(cache: Path, run_dir: Path, steps: int, threads: int) -> dict[str, Any]:
    every = max(steps // 2, 1)
    sets = [f"data.cache_dir={cache}", f"train.steps={steps}", f"train.eval_every={every}",
            f"train.ckpt_every={every}", f"train.warmup_steps={min(30, steps)}",
            f"train.threads={threads}", "train.device=cpu"]
    code = _TRAIN_CHILD.format(threads=threads,
                               config=str(REPO / "configs/tiny.yaml"), sets=sets,
                               out=str(run_dir))
    return _child(code)


def _build(cache: Path, scale: int) -> dict[str, Any]:
    return _child(_BUILD_CHILD.format(scale=scale, cache=str(cache)))


def _tile(src_dir: Path, dst_dir: Path, times: int) -> int:
    """Copy a token cache, repeating train.bin ``times`` times; returns the new token count."""
    dst_dir.mkdir(parents=True)
    shutil.copy(src_dir / "valid.bin", dst_dir / "valid.bin")
    with (src_dir / "train.bin").open("rb") as f:
        chunk = f.read()
    with (dst_dir / "train.bin").open("wb") as f:
        for _ in range(times):
            f.write(chunk)
    meta = json.loads((src_dir / "meta.json").read_text())
    meta["n_train"] = meta["n_train"] * times
    meta["note"] = f"benchmarks/memory.py: train.bin tiled {times}x from {src_dir}"
    (dst_dir / "meta.json").write_text(json.dumps(meta))
    itemsize = 2 if meta["dtype"] == "uint16" else 4
    return (dst_dir / "train.bin").stat().st_size // itemsize


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--scales", type=int, nargs="+", default=[1, 8, 64],
                   help="corpus multiples; the first is 1, the second is tokenized, the rest tiled")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2,
                   help="train runs per scale (run-to-run spread of the peaks)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/memory.json")
    args = p.parse_args(argv)
    scales = sorted(set(args.scales))
    if scales[0] != 1:
        p.error("--scales must include 1")

    load_before = os.getloadavg()
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="tti_mem_") as tmp:
        tmp_path = Path(tmp)
        caches: dict[int, Path] = {}
        builds: dict[str, Any] = {}
        # 1x and the first multiple: tokenized for real
        for scale in scales[:2]:
            caches[scale] = tmp_path / f"cache_{scale}x"
            b = _build(caches[scale], scale)
            b["how"] = "tokenized" if scale == 1 else f"tokenized ({scale}x repeated stories)"
            builds[f"{scale}x"] = b
            print(f"built {scale}x cache: {b['train_tokens']:,} train tokens, "
                  f"tokenizer peak RSS {b['maxrss_mib']} MiB", flush=True)
        # larger multiples: tile the largest tokenized cache on disk
        base_scale = scales[1] if len(scales) > 1 else 1
        base_dir = Path(builds[f"{base_scale}x"]["directory"])
        for scale in scales[2:]:
            if scale % base_scale:
                p.error(f"scale {scale} is not a multiple of {base_scale}")
            caches[scale] = tmp_path / f"cache_{scale}x"
            dst = caches[scale] / "tokens" / base_dir.name  # same cache key
            n = _tile(base_dir, dst, scale // base_scale)
            builds[f"{scale}x"] = {"how": f"train.bin of {base_scale}x tiled "
                                          f"{scale // base_scale}x", "train_tokens": n}

        all_runs: dict[str, list[dict[str, Any]]] = {f"{s}x": [] for s in scales}
        for rep in range(args.repeats):
            for scale in scales:
                r = _train(caches[scale], tmp_path / f"run_{scale}x_{rep}", args.steps,
                           args.threads)
                for key in ("maxrss", "peak_anon", "peak_file", "peak_train_bin_resident"):
                    r[f"{key}_mib"] = round(r[f"{key}_kib"] / 1024, 1)
                all_runs[f"{scale}x"].append(r)
                print(f"train {scale:3d}x: {r['train_tokens']:>11,} tokens "
                      f"({r['train_bin_bytes'] / 2**20:7.1f} MiB train.bin) -> peak RSS "
                      f"{r['maxrss_mib']} MiB, anonymous {r['peak_anon_mib']} MiB, train.bin "
                      f"resident {r['peak_train_bin_resident_mib']} MiB ({r['status']}, "
                      f"{r['train_seconds']:.0f} s)", flush=True)
        # per scale: the repeat with the highest peak RSS (the conservative one)
        runs = {k: max(v, key=lambda r: r["maxrss_kib"]) for k, v in all_runs.items()}

    rss = [runs[f"{s}x"]["maxrss_kib"] for s in scales]
    anon = [max(r["peak_anon_kib"] for r in all_runs[f"{s}x"]) for s in scales]
    tiny = runs["1x"]
    result = {
        "benchmark": "memory",
        "tiny_run": {
            "config": "configs/tiny.yaml",
            "steps": args.steps,
            "eval_and_checkpoint_every": max(args.steps // 2, 1),
            "peak_rss_mib": tiny["maxrss_mib"],  # the highest of the repeats
            "peak_rss_gib": round(tiny["maxrss_kib"] * 1024 / GIB, 3),
            "target_gib": 1.5,
            "meets_target": tiny["maxrss_kib"] * 1024 <= 1.5 * GIB,
            "val_perplexity": tiny["val_perplexity"],
        },
        "corpus_scaling": {
            "scales": scales,
            "builds": builds,
            "train_runs": all_runs,
            "repeats": args.repeats,
            "peak_rss_mib": {k: [r["maxrss_mib"] for r in v] for k, v in all_runs.items()},
            "peak_anon_mib": {k: [r["peak_anon_mib"] for r in v] for k, v in all_runs.items()},
            "peak_train_bin_resident_mib": {
                k: [r["peak_train_bin_resident_mib"] for r in v] for k, v in all_runs.items()
            },
            # largest minus smallest corpus, each side the highest of its repeats
            "largest_minus_smallest_corpus_mib": round((rss[-1] - rss[0]) / 1024, 1),
            "anon_largest_minus_smallest_corpus_mib": round((anon[-1] - anon[0]) / 1024, 1),
            "anon_spread_between_repeats_mib": {
                k: round((max(r["peak_anon_kib"] for r in v) - min(r["peak_anon_kib"] for r in v))
                         / 1024, 1)
                for k, v in all_runs.items()
            },
            "train_bin_growth_mib": round(
                (runs[f"{scales[-1]}x"]["train_bin_bytes"] - runs["1x"]["train_bin_bytes"])
                / 2**20, 1
            ),
        },
        "threads": args.threads,
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
        "seconds": round(time.time() - t_start, 1),
        "method": "ru_maxrss of a fresh subprocess per measurement (Linux: KiB)",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    cs = result["corpus_scaling"]
    print(
        f"tiny run peak RSS {result['tiny_run']['peak_rss_gib']} GiB (target <= 1.5) | "
        f"corpus {scales[0]}x -> {scales[-1]}x: train.bin +{cs['train_bin_growth_mib']} MiB, "
        f"peak RSS {cs['largest_minus_smallest_corpus_mib']:+} MiB, anonymous "
        f"{cs['anon_largest_minus_smallest_corpus_mib']:+} MiB (repeat-to-repeat spread up to "
        f"{max(cs['anon_spread_between_repeats_mib'].values())} MiB), mapped train.bin pages "
        f"{cs['peak_train_bin_resident_mib'][f'{scales[0]}x'][-1]} -> "
        f"{cs['peak_train_bin_resident_mib'][f'{scales[-1]}x'][-1]} MiB | -> {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
