"""Stage code: a digest file of the code each other stage runs, in data/code/ (semisup.pipeline.codedeps).

Every other stage depends on its own digest file (pretrain@M-B-S on `pretrain-M.json`, M a method or a
configuration) instead of the list of files it runs: DVC reruns this stage on any change under semisup/ or
stages/, or to the methods section (in about a second: no TensorFlow), and a heavy stage only when its own
digest changed. Its outputs depend on nothing else, so DVC's run cache never restores a wrong one.
"""

from __future__ import annotations

from pathlib import Path

import click

from semisup.core.io import output_set
from semisup.pipeline.codedeps import DIGESTS, digest_files
from stages.common import load, params_option, user_errors
from stages.console import done


@click.command()
@params_option
@click.option(
    "--out",
    default=DIGESTS,
    show_default=True,
    type=click.Path(file_okay=False),
    help="Writes one <stage>[-<method>].json each.",
)
@user_errors
def main(params_path: str, out: str) -> None:
    """Write the digest of every stage's code: one file per stage, and per method and configuration (of
    params.yaml's methods section) for the stages that train one."""
    names = load(params_path).run_methods()  # every method and configuration -> the method it runs
    files = digest_files(names)
    with output_set(out) as (tmp,):
        tmp.mkdir()
        for name, text in files.items():
            (tmp / name).write_text(text)
    done(f"code: {len(files)} digest files -> {Path(out)}")


if __name__ == "__main__":
    main()
