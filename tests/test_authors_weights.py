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
from zhangcolor.authors import (
    from_authors_eccv16,
    from_authors_siggraph17,
    is_authors_eccv16,
    is_authors_siggraph17,
    load_authors_eccv16,
    load_authors_release,
    load_authors_siggraph17,
)
from zhangcolor.bins import ab_bins, grid_bins
from zhangcolor.decode import annealed_mean
from zhangcolor.model_file import convert_weights, load_model
from zhangcolor.models import SIGGRAPH17, ColorizationNet, Head, ModelConfig, build_model

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


def random_parameters(
    layers: dict[str, list[tuple]], seed: int, gains: dict[str, float]
) -> dict[str, Tensor]:
    """A float32 state_dict with the keys and shapes of the listing ``layers`` and seeded random
    values, scaled so that activations neither vanish nor explode: He scaling (gain 2) for the
    convolutions, except the layers (``block.index``) that ``gains`` names; BatchNorm with
    random statistics."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for block, block_layers in layers.items():
        for i, layer in enumerate(block_layers):
            name = f"{block}.{i}"
            if layer[0] in ("conv", "deconv"):
                _, c_in, c_out, k, stride = layer[:5]
                # ConvTranspose2d keeps its weight as (in, out, k, k); each output sums
                # c_in·k²/stride² inputs.
                shape = (c_out, c_in, k, k) if layer[0] == "conv" else (c_in, c_out, k, k)
                fan_in = c_in * k * k / (stride * stride if layer[0] == "deconv" else 1)
                gain = gains.get(name, 2.0)
                state[f"{name}.weight"] = torch.randn(shape, generator=g) * (gain / fan_in) ** 0.5
                state[f"{name}.bias"] = torch.randn(c_out, generator=g) * 0.1
            elif layer[0] == "bn":
                c = layer[1]
                state[f"{name}.weight"] = 0.5 + torch.rand(c, generator=g)
                state[f"{name}.bias"] = torch.randn(c, generator=g) * 0.1
                state[f"{name}.running_mean"] = torch.randn(c, generator=g) * 0.2
                state[f"{name}.running_var"] = 0.5 + 1.5 * torch.rand(c, generator=g)
                state[f"{name}.num_batches_tracked"] = torch.tensor(1000)
    return state


def authors_state(seed: int = 0) -> dict[str, Tensor]:
    """The eccv16 release's keys and shapes with seeded random values; the 313 logits
    (``model8.6``) with a std of about 2: peaked, not one-hot."""
    state = random_parameters(AUTHORS_LAYERS, seed, gains={"model8.6": 30.0})
    kernel = (paper_bins() / AUTHORS_AB_NORM).T  # (2, 313)
    state["model_out.weight"] = kernel[:, :, None, None].float().contiguous()
    return state


def apply_block(p: dict[str, Tensor], block: str, layers: list[tuple], x: Tensor) -> Tensor:
    """One nn.Sequential of the listing, in functional form, on float64 parameters ``p``."""
    for i, layer in enumerate(layers):
        w, b = p.get(f"{block}.{i}.weight"), p.get(f"{block}.{i}.bias")
        if layer[0] == "conv":
            stride, padding, dilation = layer[4:]
            x = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation)
        elif layer[0] == "deconv":
            stride, padding, dilation = layer[4:]
            x = F.conv_transpose2d(x, w, b, stride=stride, padding=padding, dilation=dilation)
        elif layer[0] == "relu":
            x = F.relu(x)
        elif layer[0] == "leaky":
            x = F.leaky_relu(x, layer[1])
        elif layer[0] == "tanh":
            x = torch.tanh(x)
        else:
            mean, var = p[f"{block}.{i}.running_mean"], p[f"{block}.{i}.running_var"]
            x = F.batch_norm(x, mean, var, w, b, training=False, eps=BN_EPS)
    return x


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
        x = apply_block(p, block, block_layers, x)
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
    again = runner.invoke(main, ["convert-weights", str(release_file), "-o", str(target)])
    assert again.exit_code == 1 and f"{target} exists: give --overwrite" in again.output
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


# ============================================================================= siggraph17
#
# The authors' SIGGRAPHGenerator (richzhang/colorization-pytorch, models/networks.py; the same
# layout in richzhang/colorization, colorizers/siggraph17.py, whose release is
# siggraph17-df00044c.pth), stated again as a listing and evaluated with torch.nn.functional.

#: The 529 classes: the full ab grid of step 10 over [-110, 110] (colorization-pytorch's A = 23).
GRID_CLASSES = 23 * 23


def two(c_in: int, c_out: int, *, dilation: int = 1) -> list[tuple]:
    return [conv(c_in, c_out, dilation=dilation), RELU, conv(c_out, c_out, dilation=dilation), RELU]


def deconv(c_in: int, c_out: int) -> tuple:
    """ConvTranspose2d(c_in, c_out, kernel 4, stride 2, padding 1): ×2."""
    return ("deconv", c_in, c_out, 4, 2, 1, 1)


# Each block is an nn.Sequential, in the order of the authors' forward; every 3×3 conv has a bias
# and stride 1 (the encoder subsamples by slicing, outside the blocks).
SIGGRAPH17_LAYERS: dict[str, list[tuple]] = {
    "model1": [*two(4, 64), bn(64)],  # (L - 50) / 100, a / 110, b / 110, mask
    "model2": [*two(64, 128), bn(128)],
    "model3": [*three(128, 256), bn(256)],
    "model4": [*three(256, 512), bn(512)],
    "model5": [*three(512, 512, dilation=2), bn(512)],
    "model6": [*three(512, 512, dilation=2), bn(512)],
    "model7": [*three(512, 512), bn(512)],
    "model8up": [deconv(512, 256)],
    "model3short8": [conv(256, 256)],
    "model8": [RELU, *two(256, 256), bn(256)],
    "model9up": [deconv(256, 128)],
    "model2short9": [conv(128, 128)],
    "model9": [RELU, conv(128, 128), RELU, bn(128)],
    "model10up": [deconv(128, 128)],
    "model1short10": [conv(64, 128)],
    "model10": [RELU, conv(128, 128), ("leaky", 0.2)],
    "model_class": [("conv", 256, GRID_CLASSES, 1, 1, 0, 1)],  # on conv8_3: 1/4 resolution
    "model_out": [("conv", 128, 2, 1, 1, 0, 1), ("tanh",)],  # on conv10_2: full resolution
}


def siggraph17_state(seed: int = 2) -> dict[str, Tensor]:
    """The siggraph17 release's keys and shapes with seeded random values: logits with a std of
    about 2, and the regression's tanh mostly in its linear range."""
    return random_parameters(
        SIGGRAPH17_LAYERS, seed, gains={"model_class.0": 16.0, "model_out.0": 0.2}
    )


def subsample(x: Tensor) -> Tensor:
    """The authors' ×½ between model1 and model2, model2 and model3, model3 and model4."""
    return x[:, :, ::2, ::2]


def siggraph17_forward(
    state: dict[str, Tensor],
    lightness: Tensor,
    ab: Tensor | None = None,
    mask: Tensor | None = None,
    layers: dict[str, list[tuple]] = SIGGRAPH17_LAYERS,
    *,
    ab_norm: float = AUTHORS_AB_NORM,
    mask_cent: float = 0.0,
    down=subsample,
) -> tuple[Tensor, Tensor]:
    """SIGGRAPHGenerator.forward in float64 and functional form.

    Args:
        state: the authors' state_dict.
        lightness: ``(B, 1, H, W)`` L in [0, 100].
        ab: ``(B, 2, H, W)`` the users' ab in ab units (0 where there is no point), or None.
        mask: ``(B, 1, H, W)`` 1 where there is a point, 0 elsewhere, or None (no points).
        layers, ab_norm, mask_cent, down: the architecture, the hint normalisation and the
            subsampling (changed only to show that a test fails).

    Returns:
        ``logits (B, 529, H/4, W/4)`` (model_class on conv8_3) and ``ab (B, 2, H, W)``
        (model_out on conv10_2, × 110: what their demo returns).
    """
    p = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
    lightness = lightness.double()
    ab = torch.zeros_like(lightness).repeat(1, 2, 1, 1) if ab is None else ab.double()
    mask = torch.zeros_like(lightness) if mask is None else mask.double()

    def run(block: str, x: Tensor) -> Tensor:
        return apply_block(p, block, layers[block], x)

    x = torch.cat(
        [(lightness - AUTHORS_L_CENT) / AUTHORS_L_NORM, ab / ab_norm, mask - mask_cent], 1
    )
    conv1_2 = run("model1", x)
    conv2_2 = run("model2", down(conv1_2))
    conv3_3 = run("model3", down(conv2_2))
    conv4_3 = run("model4", down(conv3_3))
    conv7_3 = run("model7", run("model6", run("model5", conv4_3)))
    conv8_3 = run("model8", run("model8up", conv7_3) + run("model3short8", conv3_3))
    conv9_3 = run("model9", run("model9up", conv8_3) + run("model2short9", conv2_2))
    conv10_2 = run("model10", run("model10up", conv9_3) + run("model1short10", conv1_2))
    return run("model_class", conv8_3), run("model_out", conv10_2) * AUTHORS_AB_NORM


def user_points(seed: int = 3) -> tuple[Tensor, Tensor]:
    """Random users' points on the ``(2, 1, 48, 64)`` of :func:`lightness_batch`: per image, 6
    square patches of side 1 to 5 px, each of one random ab in [-80, 80]², as
    colorization-pytorch simulates them. Returns ``ab (2, 2, 48, 64)`` in ab units (0 off the
    points) and ``mask (2, 1, 48, 64)`` of 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    ab, mask = torch.zeros(2, 2, 48, 64), torch.zeros(2, 1, 48, 64)
    for n in range(2):
        for _ in range(6):
            side = int(torch.randint(1, 6, (1,), generator=g))
            top = int(torch.randint(0, 48 - side + 1, (1,), generator=g))
            left = int(torch.randint(0, 64 - side + 1, (1,), generator=g))
            color = (torch.rand(2, generator=g) * 160 - 80)[:, None, None]  # (2, 1, 1)
            ab[n, :, top : top + side, left : left + side] = color
            mask[n, :, top : top + side, left : left + side] = 1
    return ab, mask


def hints_of(ab: Tensor, mask: Tensor) -> Tensor:
    """Our hints ``(B, 3, H, W)``: a / 110, b / 110, mask."""
    return torch.cat([ab / AUTHORS_AB_NORM, mask], 1)


@pytest.fixture(scope="module")
def s17_release() -> dict[str, Tensor]:
    return siggraph17_state()


@pytest.fixture(scope="module")
def s17_file(s17_release, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("authors17") / "siggraph17-df00044c.pth"
    torch.save(s17_release, path)
    return path


@pytest.fixture(scope="module")
def s17_reference(s17_release) -> dict[bool, tuple[Tensor, Tensor]]:
    """The listing's (logits, ab), without the users' points (False) and with them (True)."""
    lightness = lightness_batch()
    return {
        False: siggraph17_forward(s17_release, lightness),
        True: siggraph17_forward(s17_release, lightness, *user_points()),
    }


def our_siggraph17(state: dict[str, Tensor], head: str) -> SIGGRAPH17:
    """Our network, loaded through from_authors_siggraph17, in float64 and eval mode."""
    model = SIGGRAPH17(head=Head(head))
    model.load_state_dict(from_authors_siggraph17(state))
    return model.double().eval()


@torch.no_grad()
def our_output(model: SIGGRAPH17, hinted: bool) -> Tensor:
    hints = hints_of(*(x.double() for x in user_points())) if hinted else None  # a / 110 in f64
    return model(lightness_batch().double(), hints)


# ----------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("hinted", [False, True], ids=["automatic", "points"])
@pytest.mark.parametrize("head", ["classification", "regression"])
def test_our_siggraph17_gives_the_listings_outputs(s17_release, s17_reference, head, hinted):
    logits, ab = s17_reference[hinted]
    ours = our_output(our_siggraph17(s17_release, head), hinted)
    expected = logits if head == "classification" else ab
    assert ours.shape == expected.shape
    assert expected.shape == ((2, 529, 12, 16) if head == "classification" else (2, 2, 48, 64))
    # The test means something only if the random network is far from degenerate.
    if head == "classification":
        assert logits.std() > 1.5 and 0.05 < F.softmax(logits, 1).amax(1).mean() < 0.9
    else:
        assert ab.std() > 5 and (ab.abs() > 0.9 * 110).float().mean() < 0.01  # tanh unsaturated
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-9)


def test_the_users_points_change_both_outputs(s17_reference):
    """Else the tests with points would only repeat those without."""
    (logits, ab), (logits_p, ab_p) = s17_reference[False], s17_reference[True]
    assert (ab_p - ab).abs().max() > 5 and (logits_p - logits).abs().max() > 0.5


@torch.no_grad()
def test_the_network_sees_the_authors_input_exactly(s17_release):
    """What model1 receives is cat((L - 50) / 100, a / 110, b / 110, mask), bit for bit: the
    listing's normalisation (colorizers/base_color.py) with the release demo's uncentred mask."""
    model = our_siggraph17(s17_release, "regression")
    seen = []
    model.model1.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    lightness = lightness_batch().double()
    ab, mask = (x.double() for x in user_points())
    model(lightness, hints_of(ab, mask))
    model(lightness)
    expected = torch.cat([(lightness - 50) / 100, ab / 110, mask], 1)
    assert torch.equal(seen[0], expected)
    assert torch.equal(
        seen[1], torch.cat([(lightness - 50) / 100, torch.zeros_like(ab), 0 * mask], 1)
    )
    assert set(seen[0][:, 3].unique().tolist()) == {0.0, 1.0}


def s17_mutate(block: str, index: int, layer: tuple) -> dict[str, list[tuple]]:
    layers = {name: list(block_layers) for name, block_layers in SIGGRAPH17_LAYERS.items()}
    layers[block][index] = layer
    return layers


def avg_pool(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 2)


@pytest.mark.parametrize(
    "wrong",
    [
        {"layers": s17_mutate("model5", 2, conv(512, 512))},  # conv5_2 undilated
        {"layers": s17_mutate("model10", 2, RELU)},  # ReLU, not LeakyReLU, at the end
        {"layers": s17_mutate("model_out", 1, ("leaky", 1.0))},  # no tanh
        {"layers": s17_mutate("model8", 0, ("leaky", 1.0))},  # no ReLU before conv8_1
        {"down": avg_pool},  # pooling instead of slicing
        {"ab_norm": 1.0},  # hints in ab units
        {"mask_cent": 0.5},  # colorization-pytorch's centred mask
    ],
    ids=[
        "conv5-undilated",
        "relu-last",
        "no-tanh",
        "model8-no-relu",
        "pooled",
        "ab-raw",
        "mask-centred",
    ],
)
def test_the_siggraph17_listing_tells_a_wrong_architecture_apart(s17_release, wrong):
    """Each mistake, had our network made it, fails the equivalence test above."""
    ours = our_output(our_siggraph17(s17_release, "regression"), hinted=True)
    _, ab = siggraph17_forward(s17_release, lightness_batch(), *user_points(), **wrong)
    assert (ab - ours).abs().max() > 1e-3


def test_the_siggraph17_conversion_maps_every_key_to_itself(s17_release):
    ours = from_authors_siggraph17(s17_release)
    assert list(ours) == list(s17_release)  # the listing's order is the forward's, and ours
    for key, value in s17_release.items():
        assert torch.equal(ours[key], value), key
    with torch.device("meta"):
        network = build_model(ModelConfig(backbone="siggraph17", head="classification"))
    assert list(network.state_dict()) == list(ours)


def test_a_siggraph17_release_without_num_batches_tracked_converts(s17_release):
    state = {k: v for k, v in s17_release.items() if not k.endswith("num_batches_tracked")}
    assert int(from_authors_siggraph17(state)["model8.5.num_batches_tracked"]) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s: drop(s, "model9.1.weight"),
            r"^model9\.1\.weight is missing: not the "
            r"authors' siggraph17 release \(siggraph17-df00044c\.pth\)",
        ),
        (  # the transposed convolution's kernel stored the way a Conv2d's would be
            lambda s: replace(s, "model8up.0.weight", torch.zeros(256, 512, 4, 4)),
            r"^model8up\.0\.weight has shape \(256, 512, 4, 4\), expected \(512, 256, 4, 4\)",
        ),
        (  # the paper's 313 bins instead of the full grid
            lambda s: replace(s, "model_class.0.weight", torch.zeros(313, 256, 1, 1)),
            r"^model_class\.0\.weight has shape \(313, 256, 1, 1\), expected \(529, 256, 1, 1\)",
        ),
        (
            lambda s: replace(s, "model_out.0.bias", torch.tensor([0.0, torch.inf])),
            r"^model_out\.0\.bias holds non-finite values",
        ),
        (  # two faults: the first in the forward's order is named
            lambda s: replace(
                drop(s, "model10.1.bias"),
                "model3short8.0.weight",
                torch.full((256, 256, 3, 3), torch.nan),
            ),
            r"^model3short8\.0\.weight holds non-finite values",
        ),
        (
            lambda s: replace(s, "model11.0.weight", torch.zeros(1)),
            r"does not have: model11\.0\.weight$",
        ),
        (lambda s: list(s.values()), r"expected a state_dict"),
    ],
    ids=["missing", "deconv-shape", "classes-shape", "non-finite", "first", "extra", "list"],
)
def test_a_broken_siggraph17_state_dict_names_the_key(s17_release, change, message):
    with pytest.raises(ValueError, match=message):
        from_authors_siggraph17(change(s17_release))


def test_the_two_releases_are_told_apart_by_their_keys(release, s17_release):
    assert is_authors_siggraph17(s17_release) and not is_authors_eccv16(s17_release)
    assert is_authors_eccv16(release) and not is_authors_siggraph17(release)
    assert is_authors_siggraph17(drop(s17_release, "model9.1.weight"))  # recognised, refused
    with torch.device("meta"):
        ours = build_model(ModelConfig(backbone="eccv16")).state_dict()
    for other in [ours, drop(s17_release, "model_out.0.weight"), {}, [], torch.zeros(3)]:
        assert not is_authors_siggraph17(other)


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize("head", [None, "regression", "classification"])
def test_load_authors_release_reads_siggraph17(s17_file, s17_release, head):
    model, record = load_authors_release(s17_file, head)
    expected = Head.REGRESSION if head is None else Head(head)  # their demo's output by default
    assert isinstance(model, SIGGRAPH17) and not model.training and model.kind is expected
    assert record.network == ModelConfig(backbone="siggraph17", head=expected)
    assert torch.equal(record.centers, grid_bins()) and torch.equal(record.weights, torch.ones(529))
    assert record.temperature == 0.38 and record.color_space == "lab"
    direct, direct_record = load_authors_siggraph17(s17_file, expected)
    assert direct_record.network == record.network
    with torch.no_grad():
        assert torch.equal(model(lightness_batch()), direct(lightness_batch()))


def test_load_authors_release_reads_eccv16_and_refuses_what_is_neither(release_file, tmp_path):
    model, record = load_authors_release(release_file)
    assert isinstance(model, ColorizationNet) and record.network.backbone == "eccv16"
    assert load_authors_release(release_file, "classification")[1].head is Head.CLASSIFICATION
    with pytest.raises(ValueError, match="only output is the classification head"):
        load_authors_release(release_file, "regression")
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    with pytest.raises(
        ValueError, match=r"colorization_release_v2-9b330a0b\.pth.*siggraph17-df00044c\.pth"
    ):
        load_authors_release(other)
    with pytest.raises(ValueError, match="not the authors' siggraph17 release"):
        load_authors_siggraph17(release_file)


def test_siggraph17_converts_and_colorizes_from_both_files(s17_file, tmp_path):
    """`convert-weights` writes each head as a checkpoint of ours that loads to the same network;
    `colorize --model` and `Colorizer.load` take the converted file and the release alike."""
    from click.testing import CliRunner
    from PIL import Image

    from zhangcolor.cli import main
    from zhangcolor.colorize import Colorizer

    runner = CliRunner(env={"COLUMNS": "300"})
    photo = tmp_path / "old.png"
    gray = np.linspace(0, 255, 64 * 48).reshape(48, 64).astype(np.uint8)
    Image.fromarray(gray).save(photo)
    for head, said in [
        (None, "siggraph17, regression head"),
        ("classification", "siggraph17, classification head, 529 bins"),
    ]:
        target = tmp_path / f"s17-{head}.safetensors"
        args = ["convert-weights", str(s17_file), "-o", str(target)]
        result = runner.invoke(main, args + (["--head", head] if head else []))
        assert result.exit_code == 0 and said in result.output, result.output
        model, file = load_model(target)
        direct, _ = load_authors_release(s17_file, head)
        assert file.record.network == ModelConfig(backbone="siggraph17", head=head or "regression")
        assert file.provenance["converted_from"] == "siggraph17-df00044c.pth"
        for (k, a), (k2, b) in zip(
            model.state_dict().items(), direct.state_dict().items(), strict=True
        ):
            assert k == k2 and torch.equal(a, b), k
        with torch.no_grad():
            assert torch.equal(model.eval()(lightness_batch()), direct(lightness_batch()))
        colorizer = Colorizer.load(target, size=64, precision="fp32")
        image = np.asarray(colorizer.colorize(Image.open(photo), temperature=1))
        assert image.shape == (48, 64, 3)
        chroma = image.astype(int).max(-1) - image.astype(int).min(-1)
        assert chroma.mean() > 2  # colored, not gray
        small = torch.rand(1, 1, 64, 64) * 100
        with torch.no_grad():
            expected = direct(small)
            # channels_last convolutions sum in another order: float32 rounding apart.
            torch.testing.assert_close(colorizer.network_output(small), expected, rtol=0, atol=1e-3)
        if head is None:  # the .pth itself gives the release's default head, regression
            release = Colorizer.load(s17_file, size=64, precision="fp32").colorize(
                Image.open(photo)
            )
            assert np.array_equal(np.asarray(release), image)
    out = tmp_path / "colored"
    result = runner.invoke(
        main, ["colorize", str(photo), "-o", str(out), "--model", str(s17_file), "--size", "64"]
    )
    assert result.exit_code == 0, result.output
    via_cli = np.asarray(Image.open(out / "old.png")).astype(int)
    direct = np.asarray(Colorizer.load(s17_file, size=64).colorize(Image.open(photo))).astype(int)
    assert np.abs(via_cli - direct).max() <= 1  # the CLI may run it in onnxruntime
    onnx = Colorizer.load(s17_file, size=64, precision="fp32", backend="onnx")
    torch_ = Colorizer.load(s17_file, size=64, precision="fp32", backend="torch")
    small = torch.rand(2, 1, 64, 64) * 100
    assert onnx.backend == "onnx"
    torch.testing.assert_close(
        onnx.network_output(small), torch_.network_output(small), rtol=0, atol=1e-2
    )


def test_convert_weights_refuses_a_head_the_release_has_not(release_file, s17_file, tmp_path):
    from click.testing import CliRunner

    from zhangcolor.cli import main

    target = tmp_path / "x.safetensors"
    result = CliRunner(env={"COLUMNS": "300"}).invoke(
        main, ["convert-weights", str(release_file), "-o", str(target), "--head", "regression"]
    )
    assert result.exit_code == 1 and "only output is the classification head" in result.output
    with pytest.raises(ValueError, match="no rgb-regression head"):
        convert_weights(s17_file, target, "rgb-regression")
    assert not target.exists()
