"""The ``train`` command."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import rich_click as click

from zhangcolor.cli.common import build, config_option, field_option, out
from zhangcolor.options import (
    BACKBONES,
    CACHE_MODES,
    COLOR_SPACES,
    ENCODERS,
    HEADS,
    LOSSES,
    PRECISIONS,
    SELECT_ON,
    STAGES,
    ModelConfig,
    TrainConfig,
)

#: What train starts from without --config: the shipped model's recipe.
RECIPE = "default"


@functools.cache
def _recipe() -> dict:
    from zhangcolor.config import config_dict, load_config, shipped_configs

    return config_dict(load_config(TrainConfig, shipped_configs()[RECIPE]))


def recipe_option(cls: type, name: str, *decls: str, **kwargs):
    """A field's option whose shown default is the shipped recipe's value, where train starts
    from without --config (the field's own default where the recipe keeps it)."""
    recipe = _recipe()
    value = recipe["model"][name] if cls is ModelConfig else recipe[name]
    if not kwargs.get("is_flag"):
        kwargs["show_default"] = "none" if value is None else str(value)
    return field_option(cls, name, *decls, **kwargs)


@click.command("train")
@config_option("unet-effnet-classification", default=RECIPE)
@field_option(
    TrainConfig,
    "data",
    "--data",
    type=click.Path(exists=True, file_okay=False),
    show_default="required, unless the config names a folder that exists",
)
@recipe_option(TrainConfig, "out", "--out")
@recipe_option(ModelConfig, "head", "--head", type=click.Choice(HEADS))
@recipe_option(ModelConfig, "backbone", "--backbone", type=click.Choice(BACKBONES))
@recipe_option(ModelConfig, "encoder", "--encoder", type=click.Choice(ENCODERS))
@recipe_option(ModelConfig, "width", "--width", type=float)
@recipe_option(TrainConfig, "loss", "--loss", type=click.Choice(LOSSES))
@click.option(
    "--no-rebalance",
    is_flag=True,
    default=None,
    help="Unweighted cross-entropy (the paper's 'class' variant).",
)
@recipe_option(TrainConfig, "epochs", "--epochs", type=int)
@recipe_option(TrainConfig, "max_steps", "--max-steps", type=int)
@recipe_option(TrainConfig, "batch_size", "--batch-size", type=int)
@recipe_option(TrainConfig, "lr", "--lr", type=float)
@recipe_option(TrainConfig, "crop", "--crop", type=int)
@recipe_option(TrainConfig, "bins", "--bins")
@recipe_option(TrainConfig, "precision", "--precision", type=click.Choice(PRECISIONS))
@recipe_option(TrainConfig, "workers", "--workers", type=int)
@recipe_option(TrainConfig, "seed", "--seed", type=int)
@recipe_option(TrainConfig, "init_from", "--init-from")
@recipe_option(TrainConfig, "select_on", "--select-on", type=click.Choice(SELECT_ON))
@recipe_option(TrainConfig, "patience", "--patience", type=int)
@recipe_option(TrainConfig, "ema_decay", "--ema-decay", type=float)
@recipe_option(TrainConfig, "stages", "--stages", type=click.Choice([str(s) for s in STAGES]))
@recipe_option(TrainConfig, "light_jitter", "--light-jitter", type=float)
@recipe_option(TrainConfig, "cache", "--cache", type=click.Choice(CACHE_MODES))
@click.option(
    "--color-space",
    type=click.Choice(COLOR_SPACES),
    help="rgb: the RGB-space regression baseline (--head rgb-regression). [default: lab]",
)
@field_option(TrainConfig, "tensorboard", "--tensorboard", is_flag=True)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Continue the run in this folder exactly where its last checkpoint left it.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start afresh in a run folder that holds an earlier run, deleting its checkpoints "
    "and metrics (otherwise refused).",
)
@click.option(
    "--override",
    is_flag=True,
    help="With --resume: go on with options that differ from those the checkpoint was trained "
    "with (the seed, the batch size, the lr, ...), though the run then differs from an unbroken "
    "one (otherwise refused).",
)
def train(
    config_path, resume_dir, no_rebalance, color_space, head, backbone, encoder, width, **flags
) -> None:
    """Train a colorization network on a folder of color photos.

    `--data FOLDER` is required unless the config names a folder that exists. Without
    `--config`, training starts from the shipped model's recipe (`default`: a U-Net over a
    pretrained EfficientNet-Lite0). YAML gives the defaults, flags override them, and the
    resolved config is saved in the run folder with `metrics.jsonl`, `plots/`, `samples/` and
    `checkpoints/`. Ctrl-C or SIGTERM saves a checkpoint and exits (status 130 or 143);
    `--resume RUN_DIR` goes on from it, with the run's own config.yaml. Under
    `torchrun --nproc_per_node N -m zhangcolor train ...` the run is data-parallel.
    """
    model = _model_flags(color_space, head, backbone, encoder, width)
    if flags.get("stages") is not None:
        flags["stages"] = int(flags["stages"])
    if no_rebalance:
        flags["rebalance"] = False
    overwrite, override = flags.pop("overwrite"), flags.pop("override")
    if resume_dir is not None:
        given = click.get_current_context().get_parameter_source("config_path")
        explicit = given is not click.core.ParameterSource.DEFAULT
        config_path = _resumed_config(resume_dir, config_path if explicit else None, overwrite)
        flags["out"] = str(resume_dir)
    elif override:
        raise click.BadParameter("is for --resume only", param_hint="--override")
    config = build(TrainConfig, config_path, model=model or None, **flags)
    _check_ready(config)
    _run_training(config, resume=resume_dir is not None, overwrite=overwrite, override=override)


def _resumed_config(resume_dir: Path, config_path: Path | None, overwrite: bool) -> Path:
    """The config of a run to resume: its own config.yaml; --overwrite and --config are usage
    errors beside --resume."""
    if overwrite:
        raise click.BadParameter(
            "continues a run, --overwrite replaces it: pick one", param_hint="--resume"
        )
    if config_path is not None:
        raise click.BadParameter(
            "a resumed run keeps its own config.yaml; give the options to change as flags "
            "(with --override where they change what the run computes)",
            param_hint="--config",
        )
    own = resume_dir / "config.yaml"
    if not own.is_file():
        raise click.BadParameter(f"{resume_dir} holds no config.yaml", param_hint="--resume")
    return own


#: How a run ended: its words, and the exit status where it is not 0 (128 + the signal).
_ENDINGS = {
    "done": ("finished all epochs", 0),
    "max_steps": ("reached its last step", 0),
    "early_stop": ("stopped early: {select_on} stopped improving", 0),
    "interrupted": ("interrupted; resume with: zhangcolor train --resume {out}", 130),
    "terminated": ("terminated (SIGTERM); resume with: zhangcolor train --resume {out}", 143),
}


def _run_training(config, *, resume: bool, overwrite: bool, override: bool) -> None:
    """Run it; a TrainingError or a failed write is a clean error (status 1), and SIGINT or
    SIGTERM, once it has saved, exits with 130 or 143."""
    from zhangcolor.train import TrainingError, run

    try:
        ending = run(config, resume=resume, overwrite=overwrite, override=override)
    except TrainingError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # a full disk, a read-only folder: the file is named
        where = f"cannot write {e.filename}: " if e.filename else ""
        raise click.ClickException(f"{where}{e.strerror or e}") from None
    words, status = _ENDINGS[ending]
    if ending == "max_steps" and config.max_steps is not None:
        words = "reached --max-steps"
    out.print(
        f"{words.format(select_on=config.select_on, out=config.out)}. Run folder: {config.out}"
    )
    if status:
        raise SystemExit(status)


def _model_flags(color_space, head, backbone, encoder, width) -> dict:
    """The model section the flags give (empty: the config's stands)."""
    if color_space == "rgb":
        if head not in (None, "regression", "rgb-regression"):
            raise click.BadParameter("the RGB space is for regression", param_hint="--head")
        head = "rgb-regression"
    model = {"head": head, "backbone": backbone, "encoder": encoder, "width": width}
    return {k: v for k, v in model.items() if v is not None}


def _check_ready(config: TrainConfig) -> None:
    """Refuse, before anything is written, a run that could not start: no photos to train on,
    or TensorBoard asked for without its package."""
    if config.data is None or not Path(config.data).is_dir():
        given = (
            ""
            if config.data is None
            else f" (the config's data: {config.data} is not a folder here)"
        )
        raise click.UsageError(
            f"Missing option '--data': a folder of color photos to train on{given}."
        )
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise click.UsageError(
            "--tensorboard needs the tensorboard package: pip install 'zhangcolor[tensorboard]'"
        )
