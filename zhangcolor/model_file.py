"""Every kind of model file through one reader: zhangcolor's ``.safetensors`` (this version's and
0.1.0's), ``.onnx`` exports, and the authors' released eccv16 and siggraph17 ``.pth``.

:func:`read_model` gives a file's :class:`ModelFile`: its record (what colorizing needs) and its
provenance, read once. :func:`load_network` builds the network from that, for torch;
:func:`onnx_export_of` gives the ONNX export of a torch model, made once into the cache folder.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from zhangcolor.constants import WORKING_SIZE
from zhangcolor.files import cache_dir, special_file
from zhangcolor.model_record import ModelRecord

#: The model file kinds, by suffix.
KINDS = {".safetensors": "safetensors", ".onnx": "onnx", ".pth": "pth"}


def default_model_path() -> Path:
    """The model shipped inside the package."""
    return Path(str(resources.files("zhangcolor").joinpath("weights", "default.safetensors")))


def model_path(model: str | Path) -> Path:
    """``"default"`` (the shipped model) or a model file's path, checked to exist and to be a
    regular file: FileNotFoundError for none, ValueError for a FIFO, a socket or a device,
    which are never opened (reading a FIFO blocks until someone writes into it)."""
    if str(model) == "default":
        path = default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"the shipped default model is missing ({path}); reinstall")
        return path
    path = Path(model)
    kind = special_file(path)
    if kind is not None:
        raise ValueError(f"{path} is {kind}, not a model file; give a model file's path")
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    return path


@dataclass(frozen=True)
class ModelFile:
    """A model file as read: where it is, its kind, its record and its provenance.

    For an ``.onnx`` file, :attr:`session` is the onnxruntime network made while reading it.
    """

    path: Path
    kind: str  # safetensors, onnx or pth
    record: ModelRecord
    provenance: dict = field(default_factory=dict, repr=False)
    session: object | None = field(default=None, repr=False, compare=False)
    name: str = ""  # "default" for the shipped model, else the file's stem

    @property
    def label(self) -> str:
        return self.name or self.path.stem


def read_model(model: str | Path) -> ModelFile:
    """``"default"`` or a model file, read once.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a suffix other than .safetensors, .onnx and .pth, or a file that is not a
            zhangcolor model (or the authors' release), is damaged, or was written by a newer
            zhangcolor; the message names the file.
        RuntimeError: an .onnx file without the onnx extra installed.
    """
    path = model_path(model)
    kind = KINDS.get(path.suffix.lower())
    name = "default" if str(model) == "default" else ""
    if kind == "safetensors":
        from zhangcolor.checkpoint import read_checkpoint

        record, provenance = read_checkpoint(path)
        return ModelFile(path, kind, record, provenance, name=name)
    if kind == "onnx":
        from zhangcolor.export import OnnxNetwork

        session = OnnxNetwork(path)
        return ModelFile(path, kind, session.record, session.provenance, session, name=name)
    if kind == "pth":
        from zhangcolor.authors import load_authors_release

        network, record = load_authors_release(path)  # eccv16, or siggraph17's regression
        return ModelFile(path, kind, record, {"source": path.name}, network, name=name)
    raise ValueError(
        f"{path}: not a model file (expected .safetensors from zhangcolor train, .onnx from "
        "zhangcolor export onnx, or the authors' .pth)"
    )


def load_network(model: ModelFile) -> nn.Module:
    """The torch network of a .safetensors or .pth model file, on the CPU, in eval mode."""
    if model.kind == "onnx":
        raise ValueError(f"{model.path} is an ONNX model: run it with --backend onnx")
    if model.kind == "pth":
        return model.session  # built while reading: the release is one torch.load
    from zhangcolor.checkpoint import load_weights

    return load_weights(model.path, model.record.network).eval()


def load_model(model: str | Path) -> tuple[nn.Module, ModelFile]:
    """:func:`read_model` then :func:`load_network`: a torch network and its file."""
    file = read_model(model)
    return load_network(file), file


def file_digest(path: Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def onnx_export_of(model: ModelFile, size: int = WORKING_SIZE, *, automatic: bool = False) -> Path:
    """The ONNX export of a torch model file in the cache folder, made on first use; an .onnx
    file is itself. ``size`` is the working size it will run at (the export of a network with
    the points' vote runs at the size it was made at only); ``automatic`` exports such a
    network's graph without points (lightness in, as an automatic model's), which any size runs.

    Named by the file's hash, so a changed file (or a new default model) gets a new export. The
    first use pays the export (about 1.5 s for the default model on a 2-core CPU). Where
    the cache folder cannot be written (a file, read-only, full), the export goes into a
    temporary folder deleted at exit, with a warning; a RuntimeError when that fails too.
    """
    if model.kind == "onnx":
        return model.path
    from zhangcolor.export import export_onnx

    voted = model.record.network.point_vote  # its graph with points runs at one size
    at = ("-automatic" if automatic else f"-{size}") if voted else ""
    name = f"{model.label}-{file_digest(model.path)[:16]}{at}.onnx"
    path = cache_dir() / name
    if path.is_file():
        return path
    network = load_network(model)
    if voted and automatic:
        network = _WithoutPoints(network)
    provenance = {"source": model.label}
    try:
        return export_onnx(network, model.record, path, provenance=provenance, size=size)
    except OSError as e:
        reason = e.strerror or str(e)
    folder = Path(tempfile.mkdtemp(prefix="zhangcolor-onnx-"))
    atexit.register(shutil.rmtree, folder, True)
    warnings.warn(
        f"cannot write the ONNX export into the cache folder {cache_dir()} ({reason}): made it "
        "in a temporary folder, deleted at exit; set $ZHANGCOLOR_CACHE to a writable folder to "
        "keep it",
        stacklevel=2,
    )
    try:
        return export_onnx(network, model.record, folder / name, provenance=provenance, size=size)
    except OSError as e:
        raise RuntimeError(f"cannot export {model.label} to ONNX: {e.strerror or e}") from None


class _WithoutPoints(nn.Module):
    """A guided network called without points: what its automatic ONNX graph is traced from."""

    takes_hints = False

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, lightness):
        return self.network(lightness)


class GuidedOnnx:
    """A guided classification model of ours on the onnx backend: photos without points run its
    automatic graph in onnxruntime (as fast as an automatic model's), photos with points its
    torch network on the CPU in fp32, loaded on first use. The points' geodesic search would
    unroll into an ONNX graph that takes over a minute to export, runs at one size only and
    slower than torch."""

    takes_hints = True

    def __init__(self, automatic, file: ModelFile) -> None:
        self.automatic, self.file = automatic, file
        self.record, self.provenance = automatic.record, automatic.provenance
        self.fixed_size = None
        self._torch: nn.Module | None = None

    def __call__(self, lightness, hints=None):
        if hints is None:
            return self.automatic(lightness)
        if self._torch is None:
            self._torch = load_network(self.file).float().eval()
        with torch.inference_mode():
            return self._torch(lightness.float().cpu(), hints.float().cpu())


def onnx_network(model: ModelFile, onnx_path: Path | None = None, size: int = WORKING_SIZE):
    """The onnxruntime network of a model file: an .onnx file's own session, else that of its
    export (``onnx_path``, or made now by :func:`onnx_export_of` for ``size``); for a guided
    torch model, a :class:`GuidedOnnx` over its automatic export."""
    if model.kind == "onnx":
        return model.session
    from zhangcolor.export import OnnxNetwork

    if model.record.network.point_vote:
        automatic = OnnxNetwork(onnx_path or onnx_export_of(model, size, automatic=True))
        return GuidedOnnx(automatic, model)
    return OnnxNetwork(onnx_path or onnx_export_of(model, size))


def export_model_onnx(model: str | Path, target: str | Path, *, size: int) -> Path:
    """``zhangcolor export onnx``: a torch model file (or "default") exported to ``target``."""
    from zhangcolor.export import export_onnx

    file = read_model(model)
    provenance = {**file.provenance, "source": file.label}
    return export_onnx(load_network(file), file.record, target, provenance=provenance, size=size)


def convert_weights(source: str | Path, target: str | Path, head: str | None = None) -> ModelFile:
    """Write the authors' release ``source`` (.pth, eccv16 or siggraph17) as a zhangcolor
    .safetensors at ``target``: its network with the output ``head`` (a ``Head`` or its name;
    None: the release's default, see :func:`~zhangcolor.authors.load_authors_release`), its
    bins and class weights of one. Returns what was read."""
    from zhangcolor.authors import load_authors_release
    from zhangcolor.checkpoint import write_model

    target = Path(target)
    if target.suffix != ".safetensors":
        raise ValueError(f"the target must be a .safetensors file, got {target}")
    path = model_path(source)
    if KINDS.get(path.suffix.lower()) != "pth":
        raise ValueError(f"{path} is not one of the authors' .pth releases")
    network, record = load_authors_release(path, head)
    target.parent.mkdir(parents=True, exist_ok=True)
    provenance = {"converted_from": path.name, "step": 0}
    write_model(target, network.state_dict(), record, provenance)
    return ModelFile(path, "pth", record, {"source": path.name}, network)
