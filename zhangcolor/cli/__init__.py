"""The ``zhangcolor`` command: a thin group of commands that parse, validate and call the library.

The group is assembled here; each family of commands has its module (``data``, ``train``,
``colorize``, ``evaluate``, ``model_files``, ``serve``) and :mod:`zhangcolor.cli.common` holds
what they share. Choices, defaults and each option's help come from :mod:`zhangcolor.options`
(light: no torch, so ``--help`` is quick); each value is checked once, where it enters, by the
config dataclass it fills. ``docs/make_cli_reference.py`` writes docs/cli.md from these commands.
"""

from __future__ import annotations

import os

import rich_click as click

from zhangcolor import __version__
from zhangcolor.cli.colorize import colorize
from zhangcolor.cli.data import build_bins
from zhangcolor.cli.evaluate import calibrate_command, evaluate_command
from zhangcolor.cli.model_files import (
    convert_weights_command,
    export,
    models,
    package_model_command,
)
from zhangcolor.cli.serve import serve_command
from zhangcolor.cli.train import train

click.rich_click.TEXT_MARKUP = "markdown"
click.rich_click.SHOW_ARGUMENTS = True

#: What every command sets before torch loads, unless the environment already says otherwise.
THREAD_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}


def set_thread_policy() -> None:
    """Let torch's OpenMP threads sleep, not spin, while they wait for work.

    By default they spin between operations and hold every core: beside any other busy process
    (or the decode and write threads of ``colorize``) that made evaluate, calibrate and train
    several times slower on a 2-core CPU. libgomp reads the variable once, when torch loads, so
    this runs at the command line's entry; a value the user set stands.
    """
    for name, value in THREAD_POLICY.items():
        os.environ.setdefault(name, value)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="zhangcolor")
def main() -> None:
    """Automatic image colorization, after Zhang, Isola & Efros, *Colorful Image Colorization*.

    Quantise ab into the paper's 313 bins, rebalance by the prior of your photos, train with
    cross-entropy on soft-encoded targets, and decode with the annealed mean.

    Every command sets `OMP_WAIT_POLICY=PASSIVE` (torch's threads sleep rather than spin while
    they wait), which keeps it fast on a CPU that other work shares; set the variable yourself
    (e.g. `OMP_WAIT_POLICY=ACTIVE`) to override it.
    """
    set_thread_policy()


for command in (
    build_bins,
    train,
    colorize,
    evaluate_command,
    calibrate_command,
    package_model_command,
    convert_weights_command,
    export,
    serve_command,
    models,
):
    main.add_command(command)


if __name__ == "__main__":
    main()
