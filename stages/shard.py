"""Stage shard: data/raw -> data/shards/{unlabeled,labeled,test}-NNNNN-of-MMMMM.tfrecord + manifest.json."""

from __future__ import annotations

import click

from semisup.config import to_dict
from stages.common import load, params_option, user_errors
from stages.console import done


@click.command()
@params_option
@click.option("--raw-dir", default="data/raw", show_default=True, help="What the download stage wrote.")
@click.option("--out", "out_dir", default="data/shards", show_default=True, help="Output: shards + manifest.")
@user_errors
def main(params_path: str, raw_dir: str, out_dir: str) -> None:
    """Split, resize and shard the source's images into OUT_DIR."""
    params = load(params_path)
    from semisup.data.shards import shard_bytes, write_shards
    from semisup.data.sources import load_source
    from semisup.io import check_free_space, probe_writable

    source = load_source(params.data, seed=params.seed, raw_dir=raw_dir)
    probe_writable(out_dir)
    check_free_space(out_dir, shard_bytes(source, params.data.image_size), "the shards")
    manifest = write_shards(
        out_dir,
        source,
        image_size=params.data.image_size,
        num_shards=params.data.num_shards,
        seed=params.seed,
        data_params=to_dict(params.data),
    )
    counts = ", ".join(f"{split} {n}" for split, n in manifest["counts"].items())
    done(
        f"{manifest['source']}: {counts} images of {manifest['image_shape']} in {len(manifest['shards'])} shards -> {out_dir}"
    )


if __name__ == "__main__":
    main()
