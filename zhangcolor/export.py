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
from zhangcolor.model_record import (
    ModelRecord,
    ModelRecordError,
    provenance_from_json,
    record_for_head,
    record_from_json,
)

#: The metadata keys of the record and the provenance in an .onnx file.
RECORD_KEY, PROVENANCE_KEY = "zhangcolor.model", "zhangcolor.provenance"


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

    Input ``lightness (B, 1, H, W)`` float32 L in [0, 100]; output ``(B, Q, H/4, W/4)`` logits or
    ``(B, 2, H/4, W/4)`` ab (``(B, 3, H/4, W/4)`` sRGB for the RGB baseline).
    """
    onnx = _need("onnx")
    network = network.float().eval()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    example = torch.full((1, 1, size, size), 50.0)

    def write(tmp: Path) -> None:
        # The TorchScript exporter needs nothing beyond torch and traces this plain CNN
        # exactly; the newer torch.export one would add onnxscript. Silence its deprecation.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            axes = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(
                network,
                (example,),
                str(tmp),
                input_names=["lightness"],
                output_names=["output"],
                dynamic_axes={"lightness": axes, "output": axes},
                opset_version=opset,
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        for key, value in {
            RECORD_KEY: record.to_json(),
            PROVENANCE_KEY: json.dumps(provenance or {}),
        }.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))

    atomic_write(target, write, durable=True)
    return target


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

    def __call__(self, lightness: Tensor) -> Tensor:
        """The graph on ``lightness (B, 1, H, W)``. Whatever it fails with (a graph may ask for
        any amount of memory) is raised as it is, for the caller to fail its photos with."""
        x = np.ascontiguousarray(lightness.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {"lightness": x})[0])


def check_signature(session, record: ModelRecord, path: Path) -> None:
    """Raise ValueError (naming the file) unless the graph of an onnxruntime ``session`` takes
    one input, ``lightness`` of rank 4 with one channel, and gives one output of rank 4 with the
    channels of the record's head where the graph states them."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].name != "lightness" or len(inputs[0].shape) != 4:
        got = ", ".join(f"{i.name} {_dims(i.shape)}" for i in inputs[:4])
        raise ValueError(f"{path}: its graph must take lightness (B, 1, H, W) alone, not {got}")
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
