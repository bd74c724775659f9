"""The authors' released PyTorch weights, read into zhangcolor: the paper's network (eccv16) and
their SIGGRAPH 2017 network with user points (siggraph17). :func:`load_authors_release` tells
the two apart by their keys.

**eccv16.** richzhang/colorization ships ``colorization_release_v2-9b330a0b.pth``: the
state_dict of its ``ECCVGenerator`` (``colorizers/eccv16.py``). Its blocks ``model1`` …
``model7`` are layer for layer our ``ECCV16`` body (conv, ReLU, …, BatchNorm), ``model8`` is
our conv8 followed by the 256 → 313 1×1 convolution that is our classification head, and
``model_out`` is a bias-free 313 → 2 1×1 convolution whose kernel is the bin centres divided by
110. The authors' forward is ``softmax(model8(...))`` → ``model_out`` → bilinear ×4 → ×110: the
T = 1 mean of the logits of ``model8.6``, which is ``annealed_mean(logits, centers, 1.0)`` here.
Whether the release folds the caffe model's 1/T = 2.606 (``conv8_313_rh``) into ``model8.6``
cannot be read from the authors' code: see docs/authors-weights.md.

    their key              our key
    model{b}.{i}.{p}   ->  backbone.body.{b-1}.{i}.{p}    (b = 1..8; model8.6 excepted)
    model8.6.{p}       ->  head.{p}
    model_out.weight   ->  the bins' centres, (2, 313, 1, 1) / 110 -> (313, 2)

Both normalise alike (``colorizers/base_color.py``: l_cent 50, l_norm 100, ab_norm 110, the
values of ``zhangcolor.constants``), so the weights need no rescaling.

**siggraph17.** ``siggraph17-df00044c.pth`` is the state_dict of ``SIGGRAPHGenerator``, whose
layout and names :class:`zhangcolor.models.SIGGRAPH17` keeps, so every key maps to itself. The
file holds both outputs: 529 class logits (``model_class``, the full ab grid of
:func:`zhangcolor.bins.grid_bins`) and ab (``model_out``), which is what their demo returns and
so the default head here. Its hints are ab / 110 and a mask of 0 and 1 (not centred; see
docs/authors-weights.md for colorization-pytorch's centred mask).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from zhangcolor.bins import ab_bins, grid_bins
from zhangcolor.constants import AB_NORM, Q_GRID, Q
from zhangcolor.model_record import ModelRecord, make_record
from zhangcolor.models import SIGGRAPH17, ColorizationNet, Head, ModelConfig, build_model

#: The file name the authors' code downloads (``colorizers/eccv16.py``).
RELEASE_FILE = "colorization_release_v2-9b330a0b.pth"
#: The key of the authors' decoding kernel, the bin centres / 110.
CENTERS_KEY = "model_out.weight"
#: Every other key of the release: ``model{block}.{index in the block}.{parameter}``.
_BLOCK_KEY = re.compile(r"model[1-8]\.\d+\.\w+")
#: The file name of the siggraph17 release (``colorizers/siggraph17.py``).
SIGGRAPH17_RELEASE_FILE = "siggraph17-df00044c.pth"
#: Every key of the siggraph17 release: ``{block}.{index in the block}.{parameter}``.
_SIGGRAPH17_KEY = re.compile(
    r"model(?:[1-9]|10|8up|9up|10up|3short8|2short9|1short10|_class|_out)\.\d+\.\w+"
)
#: What each release's keys look like, for messages.
_LAYOUTS = {
    "eccv16": f"{RELEASE_FILE}: keys model1.* … model8.* and {CENTERS_KEY}",
    "siggraph17": (
        f"{SIGGRAPH17_RELEASE_FILE}: keys model1.* … model10.*, model8up.*, model3short8.*, "
        "model9up.*, model2short9.*, model10up.*, model1short10.*, model_class.0.*, model_out.0.*"
    ),
}
#: How far (ab units) the file's centres may be from the paper's and still count as them: the
#: file stores centre / 110 in float32, which × 110 is off by about 1e-5.
_CENTERS_ATOL = 1e-3


def authors_model_config() -> ModelConfig:
    """The network of the release: the paper's eccv16 body at full width, classification head."""
    return ModelConfig(backbone="eccv16", head="classification", width=1.0)


def _our_shapes() -> dict[str, tuple[int, ...]]:
    """Our state_dict's keys and shapes for :func:`authors_model_config`, in module order."""
    with torch.device("meta"):  # shapes only: no memory, no init
        model = build_model(authors_model_config())
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _their_key(ours: str) -> str:
    """Our state_dict key -> the authors' key (see the module docstring's table)."""
    if ours.startswith("head."):
        return "model8.6." + ours.removeprefix("head.")
    block, rest = ours.removeprefix("backbone.body.").split(".", 1)
    return f"model{int(block) + 1}.{rest}"


def is_authors_eccv16(state: object) -> bool:
    """Whether ``state`` is shaped like the authors' eccv16 release, by its key names alone:
    ``model_out.weight`` and ``model1.0.weight`` present, and every key ``model1``-``model8``
    or ``model_out.weight``. Their siggraph17 release (``model9``, ``model10``,
    ``model_out.0.bias``, …; :func:`is_authors_siggraph17`) and zhangcolor state_dicts are not.
    :func:`from_authors_eccv16` checks the shapes."""
    if not isinstance(state, Mapping) or CENTERS_KEY not in state or "model1.0.weight" not in state:
        return False
    return all(
        isinstance(key, str) and (key == CENTERS_KEY or _BLOCK_KEY.fullmatch(key) is not None)
        for key in state
    )


def from_authors_eccv16(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
    """Our state_dict and bin centres from the authors' eccv16 state_dict.

    Args:
        state: the release's state_dict: ``model1.0.weight`` ``(64, 1, 3, 3)`` … ``model8.6.bias``
            ``(313,)`` and ``model_out.weight`` ``(2, 313, 1, 1)``, the centres / 110.

    Returns:
        The state_dict of ``ColorizationNet`` for :func:`authors_model_config`, float32, and the
        ``(313, 2)`` float32 centres in the order of the logits. When they equal the paper's
        (:func:`zhangcolor.bins.ab_bins`, to within 1e-3), the paper's exact values are returned;
        otherwise the file's are kept, with a warning, since its logits index them.

    Raises:
        ValueError: naming the first key (in the authors' layer order) that is missing, has the
            wrong shape or holds a non-finite value, or the keys the release does not have.
    """
    if not isinstance(state, Mapping):
        raise ValueError(
            f"expected a state_dict (a mapping of names to tensors), got {type(state).__name__}"
        )
    ours: dict[str, Tensor] = {}
    used = set()
    for key, shape in {**_our_shapes(), CENTERS_KEY: (2, Q, 1, 1)}.items():
        theirs = key if key == CENTERS_KEY else _their_key(key)
        if theirs not in state and key.endswith(".num_batches_tracked"):
            # Unused in eval mode; absent from files saved before PyTorch 0.4.1.
            ours[key] = torch.tensor(0, dtype=torch.long)
            continue
        ours[key] = _checked(state, theirs, shape, "eccv16")
        used.add(theirs)
    unexpected = sorted(set(state) - used)
    if unexpected:
        names = ", ".join(map(str, unexpected))
        raise ValueError(f"keys that the authors' eccv16 release does not have: {names}")
    # model_out computes Σ_q p_q · w[:, q] and the authors multiply by ab_norm afterwards.
    kernel = ours.pop(CENTERS_KEY)[:, :, 0, 0]  # (2, Q)
    centers = (kernel.double().T * AB_NORM).float()  # (Q, 2)
    paper = ab_bins()
    offset = float((centers - paper).abs().max())
    if offset <= _CENTERS_ATOL:
        # Exactly on the grid of 10, as nearest_bins's fast grid lookup wants.
        return ours, paper
    warnings.warn(
        f"the file's bin centres ({CENTERS_KEY} × {AB_NORM:g}) are up to {offset:.3g} ab units "
        "from the paper's; keeping the file's, which its logits index",
        stacklevel=2,
    )
    return ours, centers


def _checked(state: Mapping[str, Tensor], key: str, shape: tuple[int, ...], release: str) -> Tensor:
    """``state[key]`` on the CPU, float32 if floating, once it is there with ``shape`` and
    finite; else a ValueError naming ``key`` (and, when it is missing, the ``release``)."""
    if key not in state:
        file = RELEASE_FILE if release == "eccv16" else SIGGRAPH17_RELEASE_FILE
        raise ValueError(f"{key} is missing: not the authors' {release} release ({file})")
    value = state[key]
    if not isinstance(value, Tensor):
        raise ValueError(f"{key} is a {type(value).__name__}, not a tensor")
    if tuple(value.shape) != shape:
        raise ValueError(f"{key} has shape {tuple(value.shape)}, expected {shape}")
    value = value.detach().cpu()
    if not value.is_floating_point():
        return value
    if not torch.isfinite(value).all():
        raise ValueError(f"{key} holds non-finite values")
    return value.float()  # what our network holds, whatever precision the file has


def _read_state(path: str | Path) -> object:
    """What ``torch.load`` reads from ``path`` without running code, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # pickle, zip and weights_only errors have no common type
        # torch's own message is pages long and suggests unsafe loading: say it in one line.
        raise ValueError(
            f"{path} is not a PyTorch weights file (a state_dict saved with torch.save) that "
            "loads without running code"
        ) from None


def load_authors_eccv16(path: str | Path) -> tuple[ColorizationNet, ModelRecord]:
    """The authors' eccv16 release as a network and its record.

    Returns:
        The network in eval mode, and its record: :func:`authors_model_config`, the file's bins
        (the paper's), class weights of one (the authors' class-rebalancing weights are not in
        the file, and only training reads them) and the paper's T = 0.38.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not readable with ``weights_only=True`` or is not the release.
    """
    state = _read_state(path)
    if not is_authors_eccv16(state):
        raise ValueError(
            f"{path} is not the authors' eccv16 release (expected {_LAYOUTS['eccv16']})"
        )
    return _eccv16_network(state)


def _eccv16_network(state: Mapping[str, Tensor]) -> tuple[ColorizationNet, ModelRecord]:
    ours, centers = from_authors_eccv16(state)
    record = make_record(authors_model_config(), {"centers": centers, "weights": torch.ones(Q)})
    model = build_model(record.network)
    model.load_state_dict(ours)
    return model.eval(), record


# ----------------------------------------------------------------------------- siggraph17


def _siggraph17_shapes() -> dict[str, tuple[int, ...]]:
    """The release's keys and shapes (our SIGGRAPH17's, name for name), in forward order."""
    with torch.device("meta"):  # shapes only: no memory, no init
        model = SIGGRAPH17(head=Head.REGRESSION)  # both outputs exist whatever the head
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def is_authors_siggraph17(state: object) -> bool:
    """Whether ``state`` is shaped like the authors' siggraph17 release, by its key names alone:
    ``model1.0.weight`` and ``model_out.0.weight`` present, and every key one of its blocks'
    (``model1`` … ``model10``, ``model8up``, ``model3short8``, …, ``model_class``,
    ``model_out``) with an index. The eccv16 release (``model_out.weight``) is not.
    :func:`from_authors_siggraph17` checks the shapes."""
    if not isinstance(state, Mapping):
        return False
    if "model1.0.weight" not in state or "model_out.0.weight" not in state:
        return False
    return all(isinstance(key, str) and _SIGGRAPH17_KEY.fullmatch(key) for key in state)


def from_authors_siggraph17(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The state_dict of :class:`~zhangcolor.models.SIGGRAPH17` from the authors' siggraph17
    state_dict: the same keys, checked.

    Args:
        state: the release's state_dict: ``model1.0.weight`` ``(64, 4, 3, 3)`` …
            ``model_class.0.weight`` ``(529, 256, 1, 1)``, ``model_out.0.bias`` ``(2,)``.

    Returns:
        Every key of SIGGRAPH17 (either head: both outputs are in it), float32.

    Raises:
        ValueError: naming the first key (in the forward's order) that is missing, has the wrong
            shape or holds a non-finite value, or the keys the release does not have.
    """
    if not isinstance(state, Mapping):
        raise ValueError(
            f"expected a state_dict (a mapping of names to tensors), got {type(state).__name__}"
        )
    ours: dict[str, Tensor] = {}
    for key, shape in _siggraph17_shapes().items():
        if key not in state and key.endswith(".num_batches_tracked"):
            ours[key] = torch.tensor(0, dtype=torch.long)  # unused in eval mode
            continue
        ours[key] = _checked(state, key, shape, "siggraph17")
    unexpected = sorted(map(str, set(state) - set(ours)))
    if unexpected:
        raise ValueError(
            f"keys that the authors' siggraph17 release does not have: {', '.join(unexpected)}"
        )
    return ours


def authors_siggraph17_config(head: Head | str = Head.REGRESSION) -> ModelConfig:
    """The network of the siggraph17 release with the output ``head`` returns."""
    return ModelConfig(backbone="siggraph17", head=head)


def load_authors_siggraph17(
    path: str | Path, head: Head | str = Head.REGRESSION
) -> tuple[SIGGRAPH17, ModelRecord]:
    """The authors' siggraph17 release as a network and its record.

    Args:
        head: ``regression`` (ab at full resolution: what their demo returns) or
            ``classification`` (the 529 class logits at 1/4 resolution).

    Returns:
        The network in eval mode, and its record: :func:`authors_siggraph17_config`, the 529
        classes of :func:`~zhangcolor.bins.grid_bins` as its bins (a regression head does not
        use them), class weights of one and the paper's T = 0.38.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not readable with ``weights_only=True`` or is not the release.
    """
    state = _read_state(path)
    if not is_authors_siggraph17(state):
        raise ValueError(
            f"{path} is not the authors' siggraph17 release (expected {_LAYOUTS['siggraph17']})"
        )
    return _siggraph17_network(state, head)


def _siggraph17_network(
    state: Mapping[str, Tensor], head: Head | str
) -> tuple[SIGGRAPH17, ModelRecord]:
    ours = from_authors_siggraph17(state)
    bins = {"centers": grid_bins(), "weights": torch.ones(Q_GRID)}
    record = make_record(authors_siggraph17_config(head), bins)
    model = SIGGRAPH17(head=record.head)
    model.load_state_dict(ours)
    return model.eval(), record


# ----------------------------------------------------------------------------- either


def load_authors_release(
    path: str | Path, head: Head | str | None = None
) -> tuple[ColorizationNet | SIGGRAPH17, ModelRecord]:
    """Either of the authors' releases, told apart by its keys, as a network and its record.

    Args:
        head: None for the release's default (eccv16: classification, its only output;
            siggraph17: regression, as their demo); siggraph17 also takes ``classification``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is neither release (the message gives both layouts), is not
            readable with ``weights_only=True``, or has no such head.
    """
    state = _read_state(path)
    if is_authors_eccv16(state):
        if head is not None and Head.parse(head) is not Head.CLASSIFICATION:
            raise ValueError(
                f"{path} is the authors' eccv16 release, whose only output is the "
                f"classification head; it has no {Head.parse(head).value} head"
            )
        return _eccv16_network(state)
    if is_authors_siggraph17(state):
        return _siggraph17_network(state, Head.REGRESSION if head is None else head)
    raise ValueError(
        f"{path} is not the authors' eccv16 release ({_LAYOUTS['eccv16']}) nor their "
        f"siggraph17 release ({_LAYOUTS['siggraph17']})"
    )
