"""ONNX export of the network alone (decoding stays outside, so T stays free), and an
onnxruntime stand-in for the torch network (``colorize --backend onnx``).

The .onnx file carries the model's record (:mod:`zhangcolor.model_record`) in its metadata, as
a .safetensors model does; exports of zhangcolor 0.1.0, which carried only the head, the bin
centres and T, are read too.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from zhangcolor.constants import TEMPERATURE, WORKING_SIZE
from zhangcolor.files import atomic_write
from zhangcolor.hints import CHANNELS as HINT_CHANNELS
from zhangcolor.model_record import (
    ModelRecord,
    ModelRecordError,
    provenance_from_json,
    record_for_head,
    record_from_json,
)

#: The metadata keys of the record and the provenance in an .onnx file, and of the one working
#: size a guided network's export runs at.
RECORD_KEY, PROVENANCE_KEY = "zhangcolor.model", "zhangcolor.provenance"
SIZE_KEY = "zhangcolor.size"


def _need(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise RuntimeError(
            f"the ONNX backend needs {module}: pip install 'zhangcolor[onnx]'"
        ) from e


def export_onnx(
    network: nn.Module,
    record: ModelRecord,
    target: str | Path,
    *,
    provenance: dict | None = None,
    size: int = WORKING_SIZE,
    opset: int = 17,
) -> Path:
    """Export ``network`` (with its ``record``) to ONNX, batch size and image size dynamic.

    Input ``lightness (B, 1, H, W)`` float32 L in [0, 100] (and, for a guided network,
    ``hints (B, 3, H, W)``: a / 110, b / 110, mask); output ``(B, Q, H/4, W/4)`` logits or
    ``(B, 2, H/4, W/4)`` ab (``(B, 3, H/4, W/4)`` sRGB for the RGB baseline).
    """
    onnx = _need("onnx")
    network = network.float().eval()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    example: tuple[Tensor, ...] = (torch.full((1, 1, size, size), 50.0),)
    names = ["lightness"]
    if getattr(network, "takes_hints", False):
        example += (torch.zeros(1, HINT_CHANNELS, size, size),)
        names.append("hints")

    def write(tmp: Path) -> None:
        # The TorchScript exporter needs nothing beyond torch and traces these networks
        # exactly; the newer torch.export one would add onnxscript. Silence its deprecation.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            axes = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(
                network,
                example,
                str(tmp),
                input_names=names,
                output_names=["output"],
                dynamic_axes={**dict.fromkeys(names, axes), "output": axes},
                opset_version=opset,
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        entries = {RECORD_KEY: record.to_json(), PROVENANCE_KEY: json.dumps(provenance or {})}
        if has_point_vote(network):  # the points' geodesic search is traced at this size
            entries[SIZE_KEY] = str(size)
        for key, value in entries.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))

    atomic_write(target, write, durable=True)
    return target


def has_point_vote(network: nn.Module) -> bool:
    """Whether ``network`` has the points' vote (a guided classification network of ours), whose
    geodesic search unrolls into an ONNX graph of one size."""
    return getattr(network, "hint_prior", None) is not None


def onnx_record(metadata: dict[str, str], path: Path) -> tuple[ModelRecord, dict]:
    """The record and provenance in an .onnx file's metadata; ValueError naming the file when
    there is none or it is damaged."""
    try:
        if RECORD_KEY in metadata:
            return (
                record_from_json(metadata[RECORD_KEY]),
                provenance_from_json(metadata.get(PROVENANCE_KEY)),
            )
        if "zhangcolor.head" in metadata:  # an export of zhangcolor 0.1.0
            centers = json.loads(metadata.get("zhangcolor.centers", "null"))
            temperature = metadata.get("zhangcolor.temperature", TEMPERATURE)
            record = record_for_head(metadata["zhangcolor.head"], centers, temperature)
            return record, {"source": metadata.get("zhangcolor.source")}
    except (ModelRecordError, ValueError) as e:  # json's errors are ValueErrors
        raise ValueError(f"{path}: {e}") from None
    raise ValueError(f"{path} was not exported by zhangcolor (no zhangcolor metadata)")


class OnnxNetwork:
    """Runs an exported network with onnxruntime; called like the torch module. Its
    :attr:`record` and :attr:`provenance` are the file's, and its graph's input and output are
    checked against them when it is loaded (:func:`check_signature`): a graph that does not
    take ``lightness (B, 1, H, W)`` or gives another number of channels than the record's head
    fails at load, not at the first photo."""

    def __init__(self, path: str | Path) -> None:
        ort = _need("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX model at {path}")
        options = ort.SessionOptions()
        # Idle onnxruntime threads spin by default, taking the cores that colorize's threads
        # decode and write with: without spinning a folder went about 15 % faster (2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own error types for bad files
            raise ValueError(f"{path} is not a readable ONNX model ({e})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.record, self.provenance = onnx_record(metadata, path)
        check_signature(self.session, self.record, path)
        #: Whether the graph takes a user's colour points (an input named "hints").
        self.takes_hints = any(i.name == "hints" for i in self.session.get_inputs())
        #: The one input size of a guided network's export (None: any size).
        self.fixed_size = int(metadata[SIZE_KEY]) if SIZE_KEY in metadata else None

    def __call__(self, lightness: Tensor, hints: Tensor | None = None) -> Tensor:
        """The graph on ``lightness (B, 1, H, W)`` (and ``hints (B, 3, H, W)`` for a guided
        one). Whatever it fails with (a graph may ask for any amount of memory) is raised as it
        is, for the caller to fail its photos with."""
        side = self.fixed_size
        if side is not None and tuple(lightness.shape[-2:]) != (side, side):
            raise ValueError(
                f"this ONNX export of a guided network runs at {side}×{side} only; export it "
                f"again with --size {lightness.shape[-1]}"
            )
        feed = {"lightness": _array(lightness)}
        if self.takes_hints:
            if hints is None:
                hints = lightness.new_zeros(lightness.shape[0], HINT_CHANNELS, *lightness.shape[2:])
            feed["hints"] = _array(hints)
        elif hints is not None:
            raise ValueError("this ONNX model takes no hints")
        return torch.from_numpy(self.session.run(None, feed)[0])


def _array(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().float().cpu().numpy())


def check_signature(session, record: ModelRecord, path: Path) -> None:
    """Raise ValueError (naming the file) unless the graph of an onnxruntime ``session`` takes
    ``lightness`` of rank 4 with one channel (and, for a guided network, ``hints`` of rank 4),
    and gives one output of rank 4 with the
    channels of the record's head where the graph states them."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    names = [i.name for i in inputs]
    if names not in (["lightness"], ["lightness", "hints"]) or any(
        len(i.shape) != 4 for i in inputs
    ):
        got = ", ".join(f"{i.name} {_dims(i.shape)}" for i in inputs[:4])
        raise ValueError(
            f"{path}: its graph must take lightness (B, 1, H, W), and hints (B, 3, H, W) for a "
            f"guided network, not {got}"
        )
    if isinstance(inputs[0].shape[1], int) and inputs[0].shape[1] != 1:
        raise ValueError(f"{path}: its graph takes {_dims(inputs[0].shape)}, not one channel of L")
    if len(outputs) != 1 or len(outputs[0].shape) != 4:
        got = ", ".join(f"{o.name} {_dims(o.shape)}" for o in outputs[:4])
        raise ValueError(f"{path}: its graph must give one (B, C, h, w) output, not {got}")
    channels = outputs[0].shape[1]
    expected = len(record.centers) if record.head.uses_temperature else record.head.channels
    if isinstance(channels, int) and channels != expected:
        raise ValueError(
            f"{path}: its graph gives {channels} channels, and its record's "
            f"{record.head.value} head needs {expected}"
        )


def _dims(shape) -> str:
    """A graph's shape for a message: ``(batch, 1, height, width)``, cut short."""
    text = "(" + ", ".join(str(d) for d in list(shape)[:6]) + ")"
    return text if len(text) <= 60 else text[:59] + "…"
