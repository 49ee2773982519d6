"""Stage shard: data/raw -> data/shards/{unlabeled,labeled,test}-NNNNN-of-MMMMM.tfrecord + manifest.json."""

from __future__ import annotations

from pathlib import Path

import click

from semisup.config import to_dict
from stages.common import load, params_option, user_errors
from stages.console import done


@click.command()
@params_option
@click.option(
    "--raw-dir",
    default="data/raw",
    show_default=True,
    type=click.Path(file_okay=False),
    help="What the download stage wrote.",
)
@click.option(
    "--out",
    "out_dir",
    default="data/shards",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Output: shards + manifest.",
)
@user_errors
def main(params_path: str, raw_dir: str, out_dir: str) -> None:
    """Split, resize and shard the source's images into --out.

    A folder's images are decoded once, into a temporary file beside --out, before any shard is written.
    """
    params = load(params_path)
    from semisup.core.io import check_free_space, probe_writable
    from semisup.data.shards import record_bytes, shard_bytes, write_shards
    from semisup.data.sources import open_source

    size = params.data.image_size
    probe_writable(out_dir)  # before decoding a folder's images
    out = Path(out_dir)
    scratch = {"scratch_dir": out.parent, "scratch_name": f"{out.name}-pixels"}
    with open_source(
        params.data, seed=params.seed, raw_dir=raw_dir, reserve_per_image=record_bytes(size), **scratch
    ) as source:
        check_free_space(out_dir, shard_bytes(source, size), "the shards")
        manifest = write_shards(
            out_dir,
            source,
            image_size=size,
            num_shards=params.data.num_shards,
            seed=params.seed,
            data_params=to_dict(params.data),
        )
    counts = ", ".join(f"{split} {n}" for split, n in manifest["counts"].items())
    skipped = ""
    if source.skipped:  # images whose header read in the download stage but whose pixels do not decode
        names = ", ".join(source.skipped[:3]) + (", ..." if len(source.skipped) > 3 else "")
        skipped = f", {len(source.skipped)} unreadable skipped ({names})"
    done(
        f"{manifest['source']}: {counts} images of {manifest['image_shape']} in "
        f"{len(manifest['shards'])} shards{skipped} -> {out_dir}"
    )


if __name__ == "__main__":
    main()
