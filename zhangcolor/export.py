"""ONNX export of the network alone (decoding stays outside, so T stays free), and an
onnxruntime stand-in for the torch network (``colorize --backend onnx``).

The .onnx file carries what decoding needs in its metadata: the head and the bin centres.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from zhangcolor.checkpoint import load_checkpoint, model_path, model_temperature, read_metadata
from zhangcolor.constants import TEMPERATURE, WORKING_SIZE
from zhangcolor.files import atomic_write, cache_dir
from zhangcolor.options import Head


def _need(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise RuntimeError(
            f"the ONNX backend needs {module}: pip install 'zhangcolor[onnx]'"
        ) from e


def export_onnx(
    model: str | Path, target: str | Path, *, size: int = WORKING_SIZE, opset: int = 17
) -> Path:
    """Export a checkpoint (or "default") to ONNX, batch size and image size dynamic.

    Input ``lightness (B, 1, H, W)`` float32 L in [0, 100]; output ``(B, Q, H/4, W/4)`` logits or
    ``(B, 2, H/4, W/4)`` ab.
    """
    onnx = _need("onnx")
    source = model_path(model)
    net, config, bins = load_checkpoint(source)
    metadata = read_metadata(source) if source.suffix == ".safetensors" else {}
    net = net.float().eval()
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
                net,
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
            "zhangcolor.head": config.model.head.value,
            "zhangcolor.temperature": repr(model_temperature(metadata)),
            "zhangcolor.centers": json.dumps(bins["centers"].tolist()),
            "zhangcolor.source": str(source),
        }.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))

    atomic_write(target, write, durable=True)
    return target


def cached_onnx(model: str | Path) -> Path:
    """The ONNX export of a checkpoint (or "default") in the cache folder, made on first use.

    Named by the checkpoint's hash, so a changed checkpoint (or a new default model) gets a new
    export. The first use pays the export (about 1.5 s for the default model on a 2-core CPU).
    """
    source = model_path(model)
    digest = hashlib.sha256()
    with source.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    name = "default" if str(model) == "default" else source.stem
    path = cache_dir() / f"{name}-{digest.hexdigest()[:16]}.onnx"
    if not path.is_file():
        export_onnx(model, path)
    return path


class OnnxNetwork:
    """Runs an exported network with onnxruntime; called like the torch module."""

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
        meta = self.session.get_modelmeta().custom_metadata_map
        if "zhangcolor.head" not in meta:
            raise ValueError(f"{path} was not exported by zhangcolor (no zhangcolor metadata)")
        self.kind = Head.parse(meta["zhangcolor.head"])
        self.temperature = float(meta.get("zhangcolor.temperature", TEMPERATURE))
        self.centers = torch.tensor(json.loads(meta["zhangcolor.centers"]), dtype=torch.float32)

    def __call__(self, lightness: Tensor) -> Tensor:
        x = np.ascontiguousarray(lightness.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {"lightness": x})[0])
