"""fieldnet (FieldRegistration): identity at initialisation, the exact affine-then-field composition, gradcheck."""

import pytest
import torch
import torch.nn.functional as F

from stnkit.geometry import grid_to_field, integrate_velocity
from stnkit.models import REGISTRATION_MODELS, FieldRegistration, create, model_spec


def test_registered_as_a_registration_model():
    assert REGISTRATION_MODELS == ("fieldnet",)
    spec = model_spec("fieldnet")
    assert spec.task == "registration" and spec.recipe["transform"] == "velocity"
    assert {"pre_affine", "similarity", "smoothness_weight", "dice_weight"} <= spec.options
    assert model_spec("st-cnn").task == "classification"


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("pre_affine", [False, True])
@pytest.mark.parametrize("field", ["dense", "velocity"])
def test_identity_at_initialisation(dims, pre_affine, field):
    net = FieldRegistration(dims, field, pre_affine=pre_affine, features=(4, 8))
    x = torch.rand(2, 2, *([16] * dims))
    reg = net.register(*net.split(x))
    assert reg.displacement.shape == (2, dims, *([16] * dims))
    assert float(reg.displacement.abs().max()) < 1e-6
    assert torch.allclose(reg.warped, x[:, :1], atol=1e-5)
    assert (reg.affine is None) != pre_affine


def test_the_affine_transformer_then_the_field_compose_exactly():
    torch.manual_seed(0)
    net = FieldRegistration(2, "velocity", pre_affine=True, features=(4, 8))
    theta = torch.tensor([1.1, -0.1, 0.05, 0.08, 0.95, -0.1])
    v = torch.tensor([0.1, -0.05])  # a constant velocity: the translation (0.1, -0.05)
    with torch.no_grad():
        net.affine[-1].bias.copy_(theta)
        net.fieldnet.head.bias.copy_(v)
    u = net(torch.rand(1, 2, 16, 16))
    # the reference: F.affine_grid of theta, read at p + v (the affine map is linear plus translation)
    ref = F.affine_grid(theta.view(1, 2, 3), [1, 1, 16, 16], align_corners=False)
    a = theta.view(2, 3)[:, :2]
    ref = grid_to_field(ref + (a @ v).view(1, 1, 1, 2))
    assert torch.allclose(u, ref, atol=1e-5)


def test_a_velocity_field_is_integrated():
    net = FieldRegistration(2, "velocity", features=(4, 8), steps=5)
    with torch.no_grad():
        net.fieldnet.head.weight.normal_(0, 0.01)
    x = torch.rand(1, 2, 16, 16)
    reg = net.register(*net.split(x))
    assert torch.allclose(reg.displacement, integrate_velocity(reg.field, 5), atol=1e-6)


def test_float64_gradcheck():
    torch.manual_seed(0)
    net = FieldRegistration(2, "velocity", pre_affine=True, features=(2, 2), steps=2).double()
    with torch.no_grad():
        net.fieldnet.head.weight.normal_(0, 0.01)
    x = torch.rand(1, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: net(t), (x,), atol=1e-6)


def test_create_and_one_line_errors():
    m = create("fieldnet", in_channels=2, in_size=(16, 16, 16), transform="dense", pre_affine=True)
    assert m.dims == 3 and m.field == "dense" and m.affine is not None
    with pytest.raises(ValueError, match=r"^in_size must be divisible by 8 for model 'fieldnet', got \(12, 12\)$"):
        create("fieldnet", in_channels=2, in_size=(12, 12), transform="velocity")
    with pytest.raises(ValueError, match=r"^transform must be 'dense' or 'velocity'.*got 'affine'$"):
        create("fieldnet", in_channels=2, in_size=(16, 16), transform="affine")
    with pytest.raises(ValueError, match="in_size must be"):
        create("fieldnet", in_channels=2, in_size=16, transform="velocity")
    with pytest.raises(ValueError, match=r"^x must be a \(moving, fixed\) pair"):
        FieldRegistration(2, features=(4, 8))(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="in_channels must be even"):
        FieldRegistration(2, in_channels=3)
    with pytest.raises(ValueError, match="field must be one of"):
        FieldRegistration(2, field="tps")
