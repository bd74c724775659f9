"""The authors' released eccv16 weights (``zhangcolor.authors``) against an independent reference.

The reference below states the authors' ``ECCVGenerator`` (richzhang/colorization,
``colorizers/eccv16.py`` and ``colorizers/base_color.py``) as a table of layers and evaluates a
state_dict with ``torch.nn.functional`` alone. A state_dict of that shape, filled with seeded
random values, goes through ``from_authors_eccv16`` into our network: a wrong key mapping, shape,
stride, padding, dilation, BatchNorm placement or L normalisation would change the numbers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from zhangcolor import constants
from zhangcolor.authors import from_authors_eccv16, is_authors_eccv16, load_authors_eccv16
from zhangcolor.bins import ab_bins
from zhangcolor.decode import annealed_mean
from zhangcolor.model_file import convert_weights, load_model
from zhangcolor.models import ModelConfig, build_model

#: The paper's 313 centres, read from the test's own copy of pts_in_hull.
PAPER_BINS = Path(__file__).parent / "data" / "zhang2016_ab_bins.txt"

# The authors' BaseColor: l_cent, l_norm, ab_norm.
AUTHORS_L_CENT, AUTHORS_L_NORM, AUTHORS_AB_NORM = 50.0, 100.0, 110.0
#: nn.BatchNorm2d's default, which the authors' norm_layer keeps.
BN_EPS = 1e-5


def conv(c_in: int, c_out: int, *, stride: int = 1, dilation: int = 1) -> tuple:
    """A 3×3 nn.Conv2d with bias; padding = dilation keeps the size (stride 1)."""
    return ("conv", c_in, c_out, 3, stride, dilation, dilation)


RELU = ("relu",)


def bn(channels: int) -> tuple:
    return ("bn", channels)


def three(c_in: int, c_out: int, *, dilation: int = 1, stride_last: int = 1) -> list[tuple]:
    """Three conv+ReLU pairs, the last conv possibly strided."""
    return [
        conv(c_in, c_out, dilation=dilation),
        RELU,
        conv(c_out, c_out, dilation=dilation),
        RELU,
        conv(c_out, c_out, dilation=dilation, stride=stride_last),
        RELU,
    ]


# Each block is an nn.Sequential, so a layer's index in its list is its index in the state_dict's
# keys: ("conv", c_in, c_out, kernel, stride, padding, dilation), ("deconv", same), ("relu",),
# ("bn", channels).
AUTHORS_LAYERS: dict[str, list[tuple]] = {
    "model1": [conv(1, 64), RELU, conv(64, 64, stride=2), RELU, bn(64)],
    "model2": [conv(64, 128), RELU, conv(128, 128, stride=2), RELU, bn(128)],
    "model3": [*three(128, 256, stride_last=2), bn(256)],
    "model4": [*three(256, 512), bn(512)],
    "model5": [*three(512, 512, dilation=2), bn(512)],
    "model6": [*three(512, 512, dilation=2), bn(512)],
    "model7": [*three(512, 512), bn(512)],
    "model8": [
        ("deconv", 512, 256, 4, 2, 1, 1),
        RELU,
        conv(256, 256),
        RELU,
        conv(256, 256),
        RELU,
        ("conv", 256, 313, 1, 1, 0, 1),  # the 313 logits; no ReLU after it
    ],
}


def paper_bins() -> Tensor:
    """``(313, 2)`` float64, in the authors' order."""
    return torch.from_numpy(np.loadtxt(PAPER_BINS, comments="#"))


def authors_state(seed: int = 0) -> dict[str, Tensor]:
    """A float32 state_dict with the release's keys and shapes and seeded random values, scaled
    so that activations neither vanish nor explode and the softmax is far from one-hot."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for block, layers in AUTHORS_LAYERS.items():
        for i, layer in enumerate(layers):
            name = f"{block}.{i}"
            if layer[0] in ("conv", "deconv"):
                _, c_in, c_out, k, stride = layer[:5]
                # ConvTranspose2d keeps its weight as (in, out, k, k); each output sums
                # c_in·k²/stride² inputs.
                shape = (c_out, c_in, k, k) if layer[0] == "conv" else (c_in, c_out, k, k)
                fan_in = c_in * k * k / (stride * stride if layer[0] == "deconv" else 1)
                # He for the ReLU layers; logits with a std of about 2: peaked, not one-hot.
                gain = 30.0 if c_out == 313 else 2.0
                state[f"{name}.weight"] = torch.randn(shape, generator=g) * (gain / fan_in) ** 0.5
                state[f"{name}.bias"] = torch.randn(c_out, generator=g) * 0.1
            elif layer[0] == "bn":
                c = layer[1]
                state[f"{name}.weight"] = 0.5 + torch.rand(c, generator=g)
                state[f"{name}.bias"] = torch.randn(c, generator=g) * 0.1
                state[f"{name}.running_mean"] = torch.randn(c, generator=g) * 0.2
                state[f"{name}.running_var"] = 0.5 + 1.5 * torch.rand(c, generator=g)
                state[f"{name}.num_batches_tracked"] = torch.tensor(1000)
    kernel = (paper_bins() / AUTHORS_AB_NORM).T  # (2, 313)
    state["model_out.weight"] = kernel[:, :, None, None].float().contiguous()
    return state


def authors_forward(
    state: dict[str, Tensor],
    lightness: Tensor,
    layers: dict[str, list[tuple]] = AUTHORS_LAYERS,
    l_cent: float = AUTHORS_L_CENT,
) -> tuple[Tensor, Tensor]:
    """The authors' ECCVGenerator.forward, in float64 and functional form.

    Args:
        state: the authors' state_dict.
        lightness: ``(B, 1, H, W)`` L in [0, 100].
        layers, l_cent: the architecture and L centre (changed only to show that a test fails).

    Returns:
        ``logits (B, 313, H/4, W/4)``, the output of model8, and ``ab (B, 2, H, W)``, the
        forward's output: softmax -> model_out -> bilinear ×4 -> × ab_norm.
    """
    p = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
    x = (lightness.double() - l_cent) / AUTHORS_L_NORM
    for block, block_layers in layers.items():
        for i, layer in enumerate(block_layers):
            w, b = p.get(f"{block}.{i}.weight"), p.get(f"{block}.{i}.bias")
            if layer[0] == "conv":
                stride, padding, dilation = layer[4:]
                x = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation)
            elif layer[0] == "deconv":
                stride, padding, dilation = layer[4:]
                x = F.conv_transpose2d(x, w, b, stride=stride, padding=padding, dilation=dilation)
            elif layer[0] == "relu":
                x = F.relu(x)
            else:
                mean, var = p[f"{block}.{i}.running_mean"], p[f"{block}.{i}.running_var"]
                x = F.batch_norm(x, mean, var, w, b, training=False, eps=BN_EPS)
    logits = x
    out_reg = F.conv2d(F.softmax(logits, dim=1), p["model_out.weight"])  # no bias
    ab = F.interpolate(out_reg, scale_factor=4, mode="bilinear", align_corners=False)
    return logits, ab * AUTHORS_AB_NORM


def lightness_batch() -> Tensor:
    """``(2, 1, 48, 64)`` L in [0, 100]: not square, and 6×8 at conv5-6, where dilation 2 with
    padding 2 differs from dilation 1."""
    g = torch.Generator().manual_seed(1)
    smooth = F.interpolate(torch.rand(2, 1, 6, 8, generator=g), size=(48, 64), mode="bilinear")
    return (0.7 * smooth + 0.3 * torch.rand(2, 1, 48, 64, generator=g)) * 100


@pytest.fixture(scope="module")
def release() -> dict[str, Tensor]:
    return authors_state()


@pytest.fixture(scope="module")
def release_file(release, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("authors") / "colorization_release_v2-9b330a0b.pth"
    torch.save(release, path)
    return path


@pytest.fixture(scope="module")
def reference(release) -> tuple[Tensor, Tensor]:
    return authors_forward(release, lightness_batch())


@pytest.fixture(scope="module")
def our_logits(release) -> Tensor:
    """Our network, loaded through from_authors_eccv16, in float64 on the same L."""
    state, _ = from_authors_eccv16(release)
    model = build_model(ModelConfig(backbone="eccv16", head="classification", width=1.0))
    model.load_state_dict(state)
    with torch.no_grad():
        return model.double().eval()(lightness_batch().double())


# ----------------------------------------------------------------------------- equivalence


def test_our_network_gives_the_authors_logits(reference, our_logits):
    logits, _ = reference
    assert our_logits.shape == logits.shape == (2, 313, 12, 16)
    # The test means something only if the random network is far from degenerate.
    assert logits.std() > 1.5
    assert 0.05 < F.softmax(logits, 1).amax(1).mean() < 0.9
    torch.testing.assert_close(our_logits, logits, rtol=1e-9, atol=1e-9)


def test_the_authors_output_is_the_annealed_mean_at_t_1(release, reference, our_logits):
    """softmax -> model_out -> ×110 is the T = 1 mean of the same logits; the ×4 bilinear
    upsampling commutes with it."""
    _, ab = reference
    _, centers = from_authors_eccv16(release)
    ours = annealed_mean(our_logits, centers.double(), 1.0)  # (2, 2, 12, 16)
    ours = F.interpolate(ours, scale_factor=4, mode="bilinear", align_corners=False)
    assert ab.shape == ours.shape == (2, 2, 48, 64)
    assert ab.abs().amax() > 20  # colorful enough to tell a wrong centre order apart
    # The file holds centre / 110 in float32; our centres are the paper's exact ones.
    torch.testing.assert_close(ours, ab, rtol=0, atol=1e-4)


def mutate(block: str, index: int, layer: tuple) -> dict[str, list[tuple]]:
    layers = {name: list(block_layers) for name, block_layers in AUTHORS_LAYERS.items()}
    layers[block][index] = layer
    return layers


@pytest.mark.parametrize(
    ("layers", "l_cent"),
    [
        (mutate("model5", 2, conv(512, 512)), AUTHORS_L_CENT),  # conv5_2 undilated
        (mutate("model7", 0, conv(512, 512, dilation=2)), AUTHORS_L_CENT),  # conv7_1 dilated
        (mutate("model3", 4, conv(256, 256)), AUTHORS_L_CENT),  # conv3_3 without stride: shape
        (AUTHORS_LAYERS, 0.0),  # L not centred
    ],
    ids=["conv5-undilated", "conv7-dilated", "conv3-unstrided", "L-uncentred"],
)
def test_the_reference_tells_a_wrong_architecture_apart(release, our_logits, layers, l_cent):
    """Each mistake, had our network made it, fails the equivalence test above."""
    logits, _ = authors_forward(release, lightness_batch(), layers, l_cent)
    if logits.shape == our_logits.shape:
        assert (logits - our_logits).abs().max() > 1e-3
    else:
        assert logits.shape != our_logits.shape


def test_normalisation_is_the_authors():
    """Our L and ab normalisation equals the authors' BaseColor, so no weight needs rescaling."""
    assert constants.L_CENT == AUTHORS_L_CENT
    assert constants.L_NORM == AUTHORS_L_NORM
    assert constants.AB_NORM == AUTHORS_AB_NORM


def test_the_recovered_centres_are_the_papers(release):
    _, centers = from_authors_eccv16(release)
    assert centers.shape == (313, 2) and centers.dtype == torch.float32
    assert torch.equal(centers, ab_bins())  # exact: on the grid, as nearest_bins wants
    assert torch.equal(centers.double(), paper_bins())


def test_centres_that_differ_from_the_papers_are_kept_with_a_warning(release):
    """The logits index the file's centres, whatever they are, so those travel with the model."""
    state = dict(release)
    swapped = paper_bins()[torch.arange(313).roll(1)]  # same set, another order
    state["model_out.weight"] = (swapped / 110).T[:, :, None, None].float()
    with pytest.warns(UserWarning, match="keeping the file's"):
        _, centers = from_authors_eccv16(state)
    torch.testing.assert_close(centers.double(), swapped, rtol=0, atol=1e-4)


def test_the_conversion_maps_every_key_once(release):
    state, _ = from_authors_eccv16(release)
    with torch.device("meta"):
        ours = build_model(ModelConfig(backbone="eccv16", head="classification")).state_dict()
    assert list(state) == list(ours)
    assert torch.equal(state["head.weight"], release["model8.6.weight"])
    assert torch.equal(state["backbone.body.7.0.weight"], release["model8.0.weight"])
    assert torch.equal(state["backbone.body.4.6.running_var"], release["model5.6.running_var"])
    assert sum(v.numel() for v in state.values()) + 2 * 313 == sum(
        v.numel() for v in release.values()
    )


def test_a_release_without_num_batches_tracked_converts(release):
    """PyTorch before 0.4.1 saved BatchNorm without the counter, which eval mode does not use."""
    state = {k: v for k, v in release.items() if not k.endswith("num_batches_tracked")}
    ours, _ = from_authors_eccv16(state)
    assert int(ours["backbone.body.0.4.num_batches_tracked"]) == 0


# ----------------------------------------------------------------------------- files


def test_load_authors_eccv16(release_file):
    model, record = load_authors_eccv16(release_file)
    assert not model.training
    network = record.network
    assert (network.backbone, network.head, network.width) == ("eccv16", "classification", 1.0)
    assert torch.equal(record.centers, ab_bins())
    assert torch.equal(record.weights, torch.ones(313))
    assert record.temperature == 0.38


def test_convert_weights_round_trip(release_file, tmp_path):
    target = tmp_path / "out" / "eccv16-authors.safetensors"
    convert_weights(release_file, target)
    model, file = load_model(target)
    direct, _ = load_authors_eccv16(release_file)
    assert file.record.network == ModelConfig(backbone="eccv16", head="classification", width=1.0)
    assert torch.equal(file.record.centers, ab_bins())
    assert torch.equal(file.record.weights, torch.ones(313))
    for (k, a), (k2, b) in zip(
        model.state_dict().items(), direct.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(a, b), k
    lightness = lightness_batch()
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(lightness), direct(lightness), rtol=0, atol=0)


def test_convert_weights_wants_a_safetensors_target(release_file, tmp_path):
    with pytest.raises(ValueError, match=r"\.safetensors"):
        convert_weights(release_file, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


# ----------------------------------------------------------------------------- bad input


def drop(state: dict, key: str) -> dict:
    return {k: v for k, v in state.items() if k != key}


def replace(state: dict, key: str, value: Tensor) -> dict:
    return {**state, key: value}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: drop(s, "model5.2.weight"), r"^model5\.2\.weight is missing"),
        (lambda s: drop(s, "model_out.weight"), r"^model_out\.weight is missing"),
        (
            lambda s: replace(s, "model6.4.weight", torch.zeros(512, 512, 1, 1)),
            r"^model6\.4\.weight has shape \(512, 512, 1, 1\), expected \(512, 512, 3, 3\)",
        ),
        (  # the deconvolution's kernel stored the way a Conv2d's would be
            lambda s: replace(s, "model8.0.weight", torch.zeros(256, 512, 4, 4)),
            r"^model8\.0\.weight has shape \(256, 512, 4, 4\), expected \(512, 256, 4, 4\)",
        ),
        (
            lambda s: replace(s, "model_out.weight", torch.zeros(313, 2, 1, 1)),
            r"^model_out\.weight has shape \(313, 2, 1, 1\), expected \(2, 313, 1, 1\)",
        ),
        (  # two faults: the first in the authors' layer order is named
            lambda s: replace(
                drop(s, "model7.0.bias"), "model2.4.running_var", torch.full((128,), torch.nan)
            ),
            r"^model2\.4\.running_var holds non-finite values",
        ),
        (
            lambda s: replace(s, "model_out.bias", torch.zeros(2)),
            r"does not have: model_out\.bias$",
        ),
        (lambda s: list(s.values()), r"expected a state_dict"),
    ],
    ids=[
        "missing",
        "missing-centres",
        "shape",
        "deconv-shape",
        "centres-shape",
        "first",
        "extra",
        "list",
    ],
)
def test_a_broken_state_dict_names_the_key(release, change, message):
    with pytest.raises(ValueError, match=message):
        from_authors_eccv16(change(release))


def test_what_is_not_the_authors_eccv16_is_not_recognised(release):
    assert is_authors_eccv16(release)
    assert is_authors_eccv16(drop(release, "model5.2.weight"))  # recognised, then refused
    with torch.device("meta"):
        ours = build_model(ModelConfig(backbone="eccv16")).state_dict()
    siggraph17 = dict.fromkeys(
        ["model1.0.weight", "model9.0.weight", "model10.0.weight", "model_out.weight"],
        torch.zeros(1),
    )
    siggraph17["model_out.bias"] = torch.zeros(2)
    for other in [ours, siggraph17, drop(release, "model_out.weight"), {}, [], torch.zeros(3)]:
        assert not is_authors_eccv16(other)


class NotWeights:
    """Pickled into a file that weights_only=True must refuse."""


@pytest.mark.parametrize("kind", ["garbage", "pickle", "zhangcolor", "missing"])
def test_loading_a_file_that_is_not_the_release(tmp_path, kind):
    path = tmp_path / "weights.pth"
    if kind == "garbage":
        path.write_bytes(b"not a torch file")
    elif kind == "pickle":
        torch.save({"model_out.weight": NotWeights()}, path)
    elif kind == "zhangcolor":
        torch.save(build_model(ModelConfig(backbone="eccv16", width=0.125)).state_dict(), path)
    if kind == "missing":
        with pytest.raises(FileNotFoundError, match="no weights file"):
            load_authors_eccv16(path)
        return
    message = "not the authors'" if kind == "zhangcolor" else "not a PyTorch weights file"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own warnings about the refused pickle
        with pytest.raises(ValueError, match=message):
            load_authors_eccv16(path)


def test_the_cli_converts_the_release_and_colorizes_with_it_directly(release_file, tmp_path):
    """`zhangcolor convert-weights` writes a checkpoint of ours; `colorize --model RELEASE.pth`
    and `Colorizer.load(RELEASE.pth)` take the authors' file as it is; at T = 1 both are the
    authors' mean."""
    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from zhangcolor.cli import main
    from zhangcolor.colorize import Colorizer

    runner = CliRunner(env={"COLUMNS": "300"})
    target = tmp_path / "eccv16-authors.safetensors"
    result = runner.invoke(main, ["convert-weights", str(release_file), "-o", str(target)])
    assert result.exit_code == 0 and "classification head, 313 bins" in result.output
    photo = tmp_path / "old.png"
    Image.fromarray(np.linspace(0, 255, 64 * 48).reshape(48, 64).astype(np.uint8)).save(photo)
    outputs = {}
    for name, model in (("converted", target), ("release", release_file)):
        out = tmp_path / name
        args = ["colorize", str(photo), "-o", str(out), "--model", str(model), "-t", "1"]
        result = runner.invoke(main, [*args, "--size", "64"])
        assert result.exit_code == 0, result.output
        outputs[name] = np.asarray(Image.open(out / "old.png"))
    assert np.array_equal(outputs["converted"], outputs["release"])
    direct = Colorizer.load(release_file, size=64).colorize(Image.open(photo), temperature=1)
    assert np.array_equal(np.asarray(direct), outputs["release"])
    bad = tmp_path / "not-theirs.pth"
    torch.save({"weight": torch.zeros(3)}, bad)
    result = runner.invoke(
        main, ["convert-weights", str(bad), "-o", str(tmp_path / "x.safetensors")]
    )
    assert result.exit_code == 1 and "not the authors' eccv16 release" in result.output
