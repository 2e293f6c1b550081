"""Upscale (Subtle) benchmark: seconds and peak memory of the default Swin2SR upscaler, by tile size.

Builds the architecture of ``caidas/swin2SR-realworld-sr-x4-64-bsrgan-psnr`` (embed 180, six stages of six
layers, window 8, 4x with a nearest+conv upsampler) with random weights (nothing is downloaded; random
weights cost the same compute and memory), saves it as a folder and loads it the way users do
(``load_upscaler``). Each case upscales a ``--size`` square picture 2x with one ``--tiles`` tile size, in a
child process of its own, so that each peak is its own: on a GPU ``torch.cuda.max_memory_allocated``, on a
CPU the growth of the process's peak resident memory over the loaded model. A tile's memory does not depend
on the picture's size (the result is put together in CPU memory), so ``--size 256`` on a CPU measures what a
2048x2048 result (a 1024x1024 picture) needs on a GPU, the upscaler running in float32 either way.

``--tiny`` runs the same cases on the tests' tiny Swin2SR in seconds (CI runs it so the script never rots).
The last line is machine-readable: ``tile<N>_peak_mib=... tile<N>_s=...`` per tile size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT / "bench"]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from sdbot.inference.upscalers import NetworkUpscaler, load_upscaler  # noqa: E402

REALWORLD_X4 = {
    "embed_dim": 180,
    "depths": [6, 6, 6, 6, 6, 6],
    "num_heads": [6, 6, 6, 6, 6, 6],
    "window_size": 8,
    "upscale": 4,
    "upsampler": "nearest+conv",
    "image_size": 64,
}
TINY = {"embed_dim": 16, "depths": [1, 1], "num_heads": [2, 2], "window_size": 8, "upscale": 2}


def build(folder: Path, config: dict[str, object]) -> Path:
    from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

    torch.manual_seed(0)
    Swin2SRForImageSuperResolution(Swin2SRConfig(**config)).eval().save_pretrained(folder)
    return folder


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run_case(folder: Path, size: int, tile: int) -> dict[str, float]:
    """In this process: load, upscale once, report seconds and the peak memory the upscale added."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    upscaler = load_upscaler(str(folder), device, torch.float32, default="")
    assert isinstance(upscaler, NetworkUpscaler)
    upscaler.tile = tile
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    before = peak_bytes(device)
    started = time.perf_counter()
    result = upscaler.upscale(picture, 2)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    assert result.size == (2 * size, 2 * size)
    return {"peak_mib": (peak_bytes(device) - before) / 2**20, "s": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="the picture's side before upscaling")
    parser.add_argument("--tiles", default="128,256", help="tile sizes to measure, comma-separated")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny Swin2SR (seconds, for CI)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: FOLDER:TILE, run in a child process
    args = parser.parse_args(argv)
    if args.case:
        folder, tile = args.case.rsplit(":", 1)
        print(json.dumps(run_case(Path(folder), args.size, int(tile))))
        return 0
    tiles = [int(tile) for tile in args.tiles.split(",")]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    figures: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = build(Path(scratch) / "swin2sr", TINY if args.tiny else REALWORLD_X4)
        for tile in tiles:
            child = subprocess.run(
                [sys.executable, __file__, "--size", str(args.size), "--case", f"{folder}:{tile}"],
                check=True,
                capture_output=True,
                text=True,
            )
            case = json.loads(child.stdout.strip().splitlines()[-1])
            print(
                f"swin2sr {'tiny' if args.tiny else 'realworld-x4'} on {device}: {args.size}px -> "
                f"{2 * args.size}px, tile {tile}: {case['s']:.2f} s, peak +{case['peak_mib']:.0f} MiB"
            )
            figures[f"tile{tile}_peak_mib"] = f"{case['peak_mib']:.0f}"
            figures[f"tile{tile}_s"] = f"{case['s']:.2f}"
    print(" ".join(f"{key}={value}" for key, value in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
