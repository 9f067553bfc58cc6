import hashlib
import sys

import pytest
import torch
from torch import nn

import stnkit.nn
from stnkit.models import (
    HOMOGRAPHY_MODELS,
    MODELS,
    REGISTRATION_MODELS,
    SEQUENCE_MODELS,
    STClassifier,
    count_parameters,
    create,
)
from stnkit.models.backbones import BACKBONES, ResNet, StemConv, _StemConvFunction, load_backbone, resnet18, resnet34

# one label per sample (the sequence models: tests/test_sequence.py)
# the classifiers of one label (fieldnet, a registration network, and the homography networks, regressors of
# 2-channel pairs, have their own tests: test_registration_model.py, test_homography_net.py)
SINGLE = [m for m in MODELS if m not in SEQUENCE_MODELS and m not in REGISTRATION_MODELS and m not in HOMOGRAPHY_MODELS]


class TestCreate:
    @pytest.mark.parametrize("name", SINGLE)
    @pytest.mark.parametrize("size", [28, 42, 60])
    def test_smoke_shapes(self, name, size):
        model = create(name, in_size=size)
        assert model(torch.rand(3, 1, size, size)).shape == (3, 10)

    @pytest.mark.parametrize("size", [28, 42, 60])
    def test_classifiers_have_comparable_parameter_counts(self, size):
        fcn, cnn = count_parameters(create("fcn", in_size=size)), count_parameters(create("cnn", in_size=size))
        assert abs(fcn - cnn) / cnn < 0.05, (fcn, cnn)

    @pytest.mark.parametrize("name", ["fcn", "cnn"])
    def test_three_weight_layers(self, name):
        weights = [p for p in create(name).parameters() if p.ndim > 1]
        assert len(weights) == 3

    @pytest.mark.parametrize("base", ["st-fcn", "st-cnn"])
    @pytest.mark.parametrize("transform", ["affine", "projective", "tps", "similarity"])
    def test_st_models_start_at_identity(self, base, transform):
        model = create(base, in_size=28, transform=transform)
        assert isinstance(model, STClassifier)
        x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
        out, params = model.double().warp_input(x)
        assert torch.allclose(out, x, atol=1e-6)
        assert len(params) == 1

    def test_parallel_transformers_and_downsampling(self):
        model = create("st-cnn", in_size=60, num_transformers=2, st_size=30)
        out, params = model.warp_input(torch.rand(2, 1, 60, 60))
        assert out.shape == (2, 2, 30, 30) and len(params) == 2
        assert model(torch.rand(2, 1, 60, 60)).shape == (2, 10)

    def test_bad_arguments(self):
        with pytest.raises(
            ValueError,
            match="unknown model 'resnet'; valid names: fcn, cnn, st-fcn, st-cnn, tutorial-cnn, tutorial-stn",
        ):
            create("resnet")
        with pytest.raises(ValueError, match="unknown transform 'warp'"):
            create("st-cnn", transform="warp")
        with pytest.raises(ValueError, match="num_transformers must be a positive int, got 0"):
            create("st-cnn", num_transformers=0)
        with pytest.raises(ValueError, match="in_size must be positive"):
            create("cnn", in_size=0)


class TestTutorial:
    """The PyTorch tutorial's network, rebuilt from its published layer sizes."""

    def test_layer_sizes_on_mnist(self):
        cnn = create("tutorial-cnn", in_size=28)
        shapes = [tuple(p.shape) for p in cnn.parameters() if p.ndim > 1]
        assert shapes == [(10, 1, 5, 5), (20, 10, 5, 5), (50, 320), (10, 50)]
        stn = create("tutorial-stn", in_size=28)
        loc = [tuple(p.shape) for p in stn.transformer.parameters() if p.ndim > 1]
        assert loc == [(8, 1, 7, 7), (10, 8, 5, 5), (32, 90), (6, 32)]
        assert count_parameters(stn) == count_parameters(cnn) + sum(p.numel() for p in stn.transformer.parameters())

    @pytest.mark.parametrize("size", [28, 42, 60])
    def test_identity_at_init_and_dropout_only_in_training(self, size):
        stn = create("tutorial-stn", in_size=size).eval()
        x = torch.rand(2, 1, size, size)
        out, params = stn.warp_input(x)
        torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
        assert torch.equal(stn(x), stn(x))  # eval: no dropout
        stn.train()
        assert not torch.equal(stn(x), stn(x))  # 2-D dropout and dropout act in training

    def test_too_small_and_parallel_refused(self):
        with pytest.raises(ValueError, match=r"in_size must be at least \(16, 16\) for the tutorial network"):
            create("tutorial-cnn", in_size=12)
        with pytest.raises(ValueError, match="the tutorial network has one transformer, got num_transformers=2"):
            create("tutorial-stn", num_transformers=2)


class TestBadInput:
    @pytest.mark.parametrize("name", SINGLE)
    def test_wrong_channels_or_size_is_a_clear_error(self, name):
        model = create(name, in_size=28)
        with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 28, 28\) .*got shape \(2, 3, 28, 28\)"):
            model(torch.rand(2, 3, 28, 28))
        with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 28, 28\) .*got shape \(2, 1, 42, 42\)"):
            model(torch.rand(2, 1, 42, 42))
        with pytest.raises(TypeError, match="x must have a floating dtype"):
            model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


# ----------------------------------------------------------------------------------------
# Frozen structure: parameter counts and a digest of the state_dict's (key, shape) list, in
# order, of every model stnkit builds for its datasets (MNIST canvases 28, 42, 60, 84, the
# addition task's 2 channels, the 100x100 sequence canvas; loc_downsample 1 and 2), computed
# on the code before the backbones branch (commit 37980ee). A change here means old
# checkpoints no longer load, or seeded runs no longer draw the same initial weights.
FROZEN = [
    (("fcn", dict(in_size=28, loc_downsample=1)), 68182, "680f81105f6c0baa"),
    (("fcn", dict(in_size=28, loc_downsample=2)), 68182, "680f81105f6c0baa"),
    (("fcn", dict(in_size=42, loc_downsample=1)), 83822, "e38d6cd972d4c76e"),
    (("fcn", dict(in_size=42, loc_downsample=2)), 83822, "e38d6cd972d4c76e"),
    (("fcn", dict(in_size=60, loc_downsample=1)), 123974, "117df4e2ea1f4c6c"),
    (("fcn", dict(in_size=60, loc_downsample=2)), 123974, "117df4e2ea1f4c6c"),
    (("fcn", dict(in_size=84, loc_downsample=1)), 191575, "7956d66f03d1fcde"),
    (("fcn", dict(in_size=84, loc_downsample=2)), 191575, "7956d66f03d1fcde"),
    (("cnn", dict(in_size=28, loc_downsample=1)), 68522, "c3b063b765cc66d7"),
    (("cnn", dict(in_size=28, loc_downsample=2)), 68522, "c3b063b765cc66d7"),
    (("cnn", dict(in_size=42, loc_downsample=1)), 84842, "98c546004a28b997"),
    (("cnn", dict(in_size=42, loc_downsample=2)), 84842, "98c546004a28b997"),
    (("cnn", dict(in_size=60, loc_downsample=1)), 124842, "653070f47af0ed12"),
    (("cnn", dict(in_size=60, loc_downsample=2)), 124842, "653070f47af0ed12"),
    (("cnn", dict(in_size=84, loc_downsample=1)), 193962, "c7ba2c963573f3f7"),
    (("cnn", dict(in_size=84, loc_downsample=2)), 193962, "c7ba2c963573f3f7"),
    (("st-fcn", dict(in_size=28, loc_downsample=1)), 94556, "3fc4d2ed47a9f538"),
    (("st-fcn", dict(in_size=28, loc_downsample=2)), 75740, "99610766aff24903"),
    (("st-fcn", dict(in_size=42, loc_downsample=1)), 141556, "d9c2f8cc5fba7175"),
    (("st-fcn", dict(in_size=42, loc_downsample=2)), 99220, "890cb3371755ca34"),
    (("st-fcn", dict(in_size=60, loc_downsample=1)), 240460, "d181dbcb4664658e"),
    (("st-fcn", dict(in_size=60, loc_downsample=2)), 154060, "aeebe44c2e7220bf"),
    (("st-fcn", dict(in_size=84, loc_downsample=1)), 418653, "e89b34f7e0281e2f"),
    (("st-fcn", dict(in_size=84, loc_downsample=2)), 249309, "73f101c11b76a750"),
    (("st-cnn", dict(in_size=28, loc_downsample=1)), 128418, "11346cba50de70da"),
    (("st-cnn", dict(in_size=28, loc_downsample=2)), 88418, "a889ee8c2c3c23fb"),
    (("st-cnn", dict(in_size=42, loc_downsample=1)), 195738, "1c5d8616f5710131"),
    (("st-cnn", dict(in_size=42, loc_downsample=2)), 120738, "ddb3dc06a0ce541e"),
    (("st-cnn", dict(in_size=60, loc_downsample=1)), 360738, "0e3858b6d4438710"),
    (("st-cnn", dict(in_size=60, loc_downsample=2)), 184738, "0eb4dc5e8e85fda1"),
    (("st-cnn", dict(in_size=84, loc_downsample=1)), 645858, "a469bc87393c0ab9"),
    (("st-cnn", dict(in_size=84, loc_downsample=2)), 304858, "8af73e040e2a10a1"),
    (("tutorial-cnn", dict(in_size=28, loc_downsample=1)), 21840, "ea8cf587add2c516"),
    (("tutorial-cnn", dict(in_size=28, loc_downsample=2)), 21840, "ea8cf587add2c516"),
    (("tutorial-cnn", dict(in_size=42, loc_downsample=1)), 54840, "7f43ac6abfb7d1ac"),
    (("tutorial-cnn", dict(in_size=42, loc_downsample=2)), 54840, "7f43ac6abfb7d1ac"),
    (("tutorial-cnn", dict(in_size=60, loc_downsample=1)), 149840, "8209933b54f57116"),
    (("tutorial-cnn", dict(in_size=60, loc_downsample=2)), 149840, "8209933b54f57116"),
    (("tutorial-cnn", dict(in_size=84, loc_downsample=1)), 329840, "f9958d7bc2f4c947"),
    (("tutorial-cnn", dict(in_size=84, loc_downsample=2)), 329840, "f9958d7bc2f4c947"),
    (("tutorial-stn", dict(in_size=28, loc_downsample=1)), 27360, "8933f9150d3bba36"),
    (("tutorial-stn", dict(in_size=42, loc_downsample=1)), 73160, "bff530a3d075940f"),
    (("tutorial-stn", dict(in_size=42, loc_downsample=2)), 57800, "373d88de54bd67bd"),
    (("tutorial-stn", dict(in_size=60, loc_downsample=1)), 191200, "e8e426327bcf3cf8"),
    (("tutorial-stn", dict(in_size=60, loc_downsample=2)), 157600, "a2ce83f67955a1a7"),
    (("tutorial-stn", dict(in_size=84, loc_downsample=1)), 424960, "39b310644b0797be"),
    (("tutorial-stn", dict(in_size=84, loc_downsample=2)), 348160, "9def743990d4177d"),
    (("ic-stn", dict(in_size=28, loc_downsample=1)), 128418, "11346cba50de70da"),
    (("ic-stn", dict(in_size=28, loc_downsample=2)), 88418, "a889ee8c2c3c23fb"),
    (("ic-stn", dict(in_size=42, loc_downsample=1)), 195738, "1c5d8616f5710131"),
    (("ic-stn", dict(in_size=42, loc_downsample=2)), 120738, "ddb3dc06a0ce541e"),
    (("ic-stn", dict(in_size=60, loc_downsample=1)), 360738, "0e3858b6d4438710"),
    (("ic-stn", dict(in_size=60, loc_downsample=2)), 184738, "0eb4dc5e8e85fda1"),
    (("ic-stn", dict(in_size=84, loc_downsample=1)), 645858, "a469bc87393c0ab9"),
    (("ic-stn", dict(in_size=84, loc_downsample=2)), 304858, "8af73e040e2a10a1"),
    (("st-cnn", dict(in_size=60, num_transformers=2, st_size=30, loc_downsample=1)), 542906, "2b24420ede4a07d6"),
    (("st-cnn", dict(in_size=42, in_channels=2, num_classes=19, loc_downsample=1)), 227639, "a417c9abfc915588"),
    (("seq-cnn", dict(in_size=100, num_labels=3, loc_downsample=1)), 1223326, "2284f869ecc89426"),
    (("seq-st-cnn", dict(in_size=100, num_labels=3, loc_downsample=1)), 974486, "1818d66164e655ac"),
    (("rnn-spn", dict(in_size=100, num_labels=3, loc_downsample=1)), 1136194, "2b6ee9443b7180c6"),
    (("st-cnn", dict(in_size=60, num_transformers=2, st_size=30, loc_downsample=2)), 190906, "8e9acdac734d6ed1"),
    (("st-cnn", dict(in_size=42, in_channels=2, num_classes=19, loc_downsample=2)), 152639, "fd74bd5fc8397f5c"),
    (("seq-cnn", dict(in_size=100, num_labels=3, loc_downsample=2)), 1223326, "2284f869ecc89426"),
    (("seq-st-cnn", dict(in_size=100, num_labels=3, loc_downsample=2)), 493486, "75f15ff42ab4c10d"),
    (("rnn-spn", dict(in_size=100, num_labels=3, loc_downsample=2)), 655194, "c58805dc6edcbf4e"),
]


def structure_digest(model: nn.Module) -> str:
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class TestFrozenStructure:
    @pytest.mark.parametrize(
        ("spec", "count", "digest"),
        FROZEN,
        ids=["-".join([n, *(f"{k}{v}" for k, v in kw.items())]) for (n, kw), _, _ in FROZEN],
    )
    def test_parameter_count_and_state_dict_keys_unchanged(self, spec, count, digest):
        name, kw = spec
        model = create(name, **kw)
        assert (count_parameters(model), structure_digest(model)) == (count, digest)

    def test_st_cnn_rts_keys_written_out(self):
        # the digest above, readable for one model: create("st-cnn", in_size=42, loc_downsample=2)
        model = create("st-cnn", in_size=42, loc_downsample=2)
        assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == [
            ("transformer.localization.0.weight", (20, 1, 5, 5)),
            ("transformer.localization.0.bias", (20,)),
            ("transformer.localization.3.weight", (20, 20, 5, 5)),
            ("transformer.localization.3.bias", (20,)),
            ("transformer.localization.7.weight", (50, 500)),
            ("transformer.localization.7.bias", (50,)),
            ("transformer.head.weight", (6, 50)),
            ("transformer.head.bias", (6,)),
            ("classifier.features.0.weight", (32, 1, 9, 9)),
            ("classifier.features.0.bias", (32,)),
            ("classifier.features.3.weight", (32, 32, 7, 7)),
            ("classifier.features.3.bias", (32,)),
            ("classifier.classifier.weight", (10, 3200)),
            ("classifier.classifier.bias", (10,)),
        ]
        assert count_parameters(model) == 120738

    def test_sequence_canvas_has_no_pooling_layer(self):
        # the largest feature map stnkit builds (100 / 4 = 25 a side) is flattened as it always was
        model = create("seq-st-cnn", in_size=100, num_labels=3)
        assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.transformer.localization.modules())
        assert model.transformer.localization[7].in_features == 20 * 25 * 25

    def test_st_classifier_is_the_nn_one(self):
        assert STClassifier is stnkit.nn.STClassifier
        assert STClassifier.__module__ == "stnkit.nn.wrap"


# ----------------------------------------------------------------------------------------
def feature_size(net: ResNet, x: torch.Tensor) -> tuple[int, int]:
    """(H, W) of the last stage's output."""
    seen = {}

    def hook(module, inputs, output):
        seen["shape"] = tuple(output.shape[-2:])  # returns None: the output is left as is

    handle = net.layer4.register_forward_hook(hook)
    net(x)
    handle.remove()
    return seen["shape"]


class TestResNet:
    def test_published_parameter_counts(self):
        # He et al. / torchvision: 11,689,512 and 21,797,672 with 3 channels and 1000 classes
        assert count_parameters(resnet18()) == 11_689_512
        assert count_parameters(resnet34()) == 21_797_672

    def test_layout(self):
        net = resnet34(in_channels=2, num_classes=7)
        assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
        assert net.conv1.weight.shape == (64, 2, 7, 7) and net.conv1.stride == (2, 2)
        assert isinstance(net.maxpool, nn.MaxPool2d) and net.fc.weight.shape == (7, 512)
        # stage 1 keeps the shape (no shortcut conv), stages 2-4 halve it with a 1x1 conv shortcut
        assert net.layer1[0].downsample is None
        assert [getattr(net, f"layer{i}")[0].downsample[0].stride for i in (2, 3, 4)] == [(2, 2)] * 3
        small = resnet18(small_input=True)
        assert small.conv1.weight.shape == (64, 3, 3, 3) and small.conv1.stride == (1, 1)
        assert isinstance(small.maxpool, nn.Identity)

    @pytest.mark.parametrize(("size", "small", "final"), [(32, False, (1, 1)), (32, True, (4, 4)), (64, False, (2, 2))])
    def test_output_shape_and_final_feature_size(self, size, small, final):
        net = resnet18(in_channels=1, num_classes=10, small_input=small).eval()
        x = torch.rand(2, 1, size, size)
        assert net(x).shape == (2, 10)
        assert feature_size(net, x) == final

    def test_he_init(self):
        torch.manual_seed(0)
        net = resnet18()
        w = net.layer3[0].conv2.weight  # fan_out 256 * 3 * 3
        assert abs(w.std().item() / (2 / (256 * 9)) ** 0.5 - 1) < 0.02
        bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        assert len(bns) == 20 and all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
        zero = resnet18(zero_init_residual=True)
        assert all(torch.all(b.bn2.weight == 0) for layer in (zero.layer1, zero.layer4) for b in layer)

    def test_gradient_reaches_every_parameter(self):
        torch.manual_seed(0)
        net = resnet18(in_channels=3, num_classes=5, small_input=True)
        loss = nn.functional.cross_entropy(net(torch.rand(2, 3, 32, 32)), torch.tensor([1, 4]))
        loss.backward()
        missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
        assert missing == []

    def test_torchvision_key_names(self):
        keys = set(resnet18().state_dict())
        assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.1.bn2.bias"} <= keys
        assert {"layer2.0.downsample.0.weight", "layer4.0.downsample.1.running_var", "fc.weight", "fc.bias"} <= keys

    @pytest.mark.parametrize(("h", "w", "c"), [(9, 12, 3), (10, 7, 2), (13, 13, 1)])
    def test_stem_conv_gradients(self, h, w, c):
        # the space-to-depth input gradient, on even and odd sizes
        conv = StemConv(c, 4).double()
        x = torch.rand(2, c, h, w, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(_StemConvFunction.apply, (x, conv.weight))

    def test_stem_conv_is_the_conv(self):
        torch.manual_seed(0)
        conv = StemConv(3)
        x = torch.rand(2, 3, 40, 36, requires_grad=True)
        g = torch.randn(2, 64, 20, 18)
        out = conv(x)
        assert torch.equal(out, nn.functional.conv2d(x, conv.weight, stride=2, padding=3))
        assert out.grad_fn.name() == "_StemConvFunctionBackward"
        out.backward(g)
        ours = x.grad.clone(), conv.weight.grad.clone()
        x.grad = conv.weight.grad = None
        nn.functional.conv2d(x, conv.weight, stride=2, padding=3).backward(g)
        torch.testing.assert_close(ours[0], x.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours[1], conv.weight.grad, atol=0, rtol=0)
        with torch.no_grad():
            assert conv(x).grad_fn is None  # inference: the plain conv
        assert conv(x.detach()).grad_fn.name() != "_StemConvFunctionBackward"  # no input gradient needed

    def test_bad_input(self):
        net = resnet18(in_channels=3, num_classes=10)
        with pytest.raises(
            ValueError, match=r"x must have shape \(B, 3, H, W\) for this ResNet, got shape \(1, 1, 32, 32\)"
        ):
            net(torch.rand(1, 1, 32, 32))
        with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\), got shape \(3, 32, 32\)"):
            net(torch.rand(3, 32, 32))
        with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
            resnet18(num_classes=0)
        with pytest.raises(ValueError, match=r"stages must be 4 positive ints \(blocks per stage\), got \(2, 2\)"):
            ResNet((2, 2))


class TestBackbones:
    @pytest.mark.parametrize("name", list(BACKBONES))
    @pytest.mark.parametrize("in_size", [(32, 32), (64, 48)])
    def test_factories_share_one_signature(self, name, in_size):
        net = BACKBONES[name](in_channels=2, in_size=in_size, num_classes=4).eval()
        assert net(torch.rand(3, 2, *in_size)).shape == (3, 4)

    def test_small_input_stem_below_64_px(self):
        assert BACKBONES["resnet18"](3, (63, 200), 10).small_input
        assert not BACKBONES["resnet34"](3, (64, 64), 10).small_input

    def test_cnn_is_the_papers(self):
        net = BACKBONES["cnn"](1, (42, 42), 10)
        assert structure_digest(net) == structure_digest(create("cnn", in_size=42))

    def test_resnet_refuses_below_32_px(self):
        with pytest.raises(
            ValueError, match=r"in_size must be at least \(32, 32\) for a ResNet backbone, got \(28, 40\)"
        ):
            BACKBONES["resnet18"](1, (28, 40), 10)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's module on sys.path: a good factory, one returning a non-module, a non-callable."""
    (tmp_path / "my_backbones.py").write_text(
        "from torch import nn\n"
        "class Holder:\n"
        "    @staticmethod\n"
        "    def tiny(in_channels, in_size, num_classes):\n"
        "        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * in_size[0] * in_size[1], num_classes))\n"
        "def tiny(in_channels, in_size, num_classes):\n"
        "    return Holder.tiny(in_channels, in_size, num_classes)\n"
        "def not_a_module(in_channels, in_size, num_classes):\n"
        "    return 42\n"
        "VALUE = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_backbones"
    sys.modules.pop("my_backbones", None)


class TestLoadBackbone:
    def test_names_resolve_to_the_registry(self):
        net = load_backbone("resnet18")(in_channels=1, in_size=(40, 40), num_classes=3)
        assert isinstance(net, ResNet) and net.fc.out_features == 3 and net.small_input

    @pytest.mark.parametrize("attr", ["tiny", "Holder.tiny"])
    def test_user_spec_called_with_the_keywords(self, user_module, attr):
        net = load_backbone(f"{user_module}:{attr}")(in_channels=2, in_size=(5, 6), num_classes=7)
        assert net[1].weight.shape == (7, 60)
        assert net(torch.rand(4, 2, 5, 6)).shape == (4, 7)

    def test_errors(self, user_module):
        with pytest.raises(
            ValueError, match=r"backbone spec 'no_such_mod_xyz:f': cannot import module 'no_such_mod_xyz'"
        ):
            load_backbone("no_such_mod_xyz:f")
        with pytest.raises(
            ValueError, match="backbone spec 'my_backbones:nope': module 'my_backbones' has no attribute 'nope'"
        ):
            load_backbone("my_backbones:nope")
        with pytest.raises(TypeError, match="backbone spec 'my_backbones:VALUE' must name a callable, got int"):
            load_backbone("my_backbones:VALUE")
        with pytest.raises(TypeError, match="backbone 'my_backbones:not_a_module' must return an nn.Module, got int"):
            load_backbone("my_backbones:not_a_module")(in_channels=1, in_size=(8, 8), num_classes=2)
        with pytest.raises(ValueError, match="unknown backbone 'resnet50'; valid names: cnn, resnet18, resnet34"):
            load_backbone("resnet50")
        with pytest.raises(ValueError, match="spec must be 'package.module:callable', got ':tiny'"):
            load_backbone(":tiny")
        with pytest.raises(TypeError, match="spec must be a str .*, got int"):
            load_backbone(3)
