import pytest
import torch

from stnkit.models import MODELS, SEQUENCE_MODELS, STClassifier, count_parameters, create

# one label per sample (the sequence models: tests/test_sequence.py)
SINGLE = [m for m in MODELS if m not in SEQUENCE_MODELS]


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
