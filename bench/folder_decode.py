"""The folder source's download and shard stages on large JPEGs: seconds per stage and decodes per image.

Writes --images JPEGs of --width x --height (smooth random content plus noise, 3 classes and an
unlabeled/ folder) into a temporary directory, then runs `python -m stages.download` and
`python -m stages.shard` on them, each as its own process, as `dvc repro` would. Inside each process
`semisup.data.folder.decode_image` and Pillow's decoder (ImageFile.load, when pixel data is left to
decode) are wrapped to count decodes, so the figures say how often each image was decoded per stage.
With --code DIR the stages run from another checkout of this project (e.g. an older commit unpacked by
`git archive`), to compare. The last line is one JSON object of the figures.
Usage: python bench/folder_decode.py [--images 60] [--width 2000] [--height 1500] [--size 96] [--code DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("cat", "dog", "fox")


def write_folder(root: Path, images: int, width: int, height: int) -> int:
    """`images` JPEGs: a quarter in unlabeled/, the rest spread over CLASSES. -> their total bytes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    total = 0
    for i in range(images):
        sub = "unlabeled" if i % 4 == 3 else CLASSES[i % 3]
        path = root / sub / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (height // 50, width // 50, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
        noisy = np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(path, quality=90)
        total += path.stat().st_size
    return total


def counted_stage(stage: str, counts_path: str, argv: list[str]) -> None:
    """Run stages.<stage> in this process with decodes counted into counts_path (JSON)."""
    import hashlib

    from PIL import ImageFile

    from semisup.data import folder

    decodes: dict[str, int] = {}
    pillow = [0]
    real_decode, real_load = folder.decode_image, ImageFile.ImageFile.load

    def decode_image(data: bytes, **kwargs):
        key = hashlib.sha256(data).hexdigest()
        decodes[key] = decodes.get(key, 0) + 1
        return real_decode(data, **kwargs)

    def load(self):
        if self.tile:  # pixel data left to decode
            pillow[0] += 1
        return real_load(self)

    folder.decode_image = decode_image
    ImageFile.ImageFile.load = load
    module = __import__(f"stages.{stage}", fromlist=["main"])
    code = 0
    try:
        module.main.main(argv, standalone_mode=False)
    except SystemExit as exc:  # the stage's one-line errors exit 2
        code = exc.code or 0
    finally:
        Path(counts_path).write_text(json.dumps({"decode_image": decodes, "pillow_loads": pillow[0]}))
    sys.exit(code)


def run_stage(stage: str, params: Path, work: Path, code_dir: Path) -> tuple[float, dict]:
    """-> (seconds, decode counts) of one stage run as its own process."""
    dirs = ["--raw-dir", str(work / "data" / "raw")]
    if stage == "shard":
        dirs += ["--out", str(work / "data" / "shards")]
    counts = work / f"{stage}-counts.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(code_dir))
    cmd = [sys.executable, __file__, "--counted", stage, str(counts), "--", "--params", str(params), *dirs]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=code_dir, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{stage} failed ({proc.returncode}):\n{proc.stderr}")
    print(proc.stdout.strip(), file=sys.stderr)
    return seconds, json.loads(counts.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--width", type=int, default=2000)
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument("--size", type=int, default=96, help="data.image_size")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose stages run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        nbytes = write_folder(work / "imgs", args.images, args.width, args.height)
        print(
            f"wrote {args.images} JPEGs of {args.width}x{args.height} ({nbytes / 2**20:.1f} MiB) "
            f"in {time.perf_counter() - start:.1f} s",
            file=sys.stderr,
        )
        params = yaml.safe_load((args.code / "params.yaml").read_text())
        params["data"] |= {
            "source": "folder",
            "path": str(work / "imgs"),
            "image_size": args.size,
            "labeled_per_class": 3,
            "num_shards": 2,
        }
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        figures: dict = {
            "images": args.images,
            "width": args.width,
            "height": args.height,
            "image_size": args.size,
            "jpeg_mib": round(nbytes / 2**20, 1),
            "code": str(args.code),
        }
        per_image: dict[str, int] = {}
        for stage in ("download", "shard"):
            seconds, counts = run_stage(stage, work / "params.yaml", work, args.code)
            for key, n in counts["decode_image"].items():
                per_image[key] = per_image.get(key, 0) + n
            decodes = sum(counts["decode_image"].values())
            figures[stage] = {
                "seconds": round(seconds, 2),
                "decode_image_calls": decodes,
                "pillow_decodes": counts["pillow_loads"],
            }
            print(
                f"{stage:>8}: {seconds:6.2f} s, decode_image {decodes}, Pillow decodes "
                f"{counts['pillow_loads']} ({decodes / args.images:.2f} per image)"
            )
        per = sorted(set(per_image.values())) if len(per_image) == args.images else ["some never decoded"]
        figures["decodes_per_image"] = per
        figures["total_seconds"] = round(figures["download"]["seconds"] + figures["shard"]["seconds"], 2)
        print(f"decodes per image across both stages: {per}; total {figures['total_seconds']} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--counted":
        counted_stage(sys.argv[2], sys.argv[3], sys.argv[5:])
    else:
        main()
