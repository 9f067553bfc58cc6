"""Backbones to put a spatial transformer in front of: the paper's CNN, ResNet-18 and ResNet-34.

:data:`BACKBONES` maps a name to a factory with one signature,
``factory(in_channels: int, in_size: tuple[int, int], num_classes: int) -> nn.Module``;
:func:`load_backbone` resolves a user's own ``"package.module:callable"`` with the
same keywords. :func:`~stnkit.nn.with_transformer` puts transformers in front of
any of them.

The ResNets are the standard layout (He et al. 2016, the BasicBlock variant):
a 7x7 stride-2 conv stem with batch norm, ReLU and a 3x3 stride-2 max-pool,
four stages of BasicBlocks (``[2, 2, 2, 2]`` for ResNet-18, ``[3, 4, 6, 3]`` for
ResNet-34; 64, 128, 256, 512 channels; stages 2-4 start with stride 2 and a
1x1 conv + batch norm shortcut), global average pooling and a linear layer.
With 3 input channels and 1000 classes they have the published parameter
counts, 11,689,512 and 21,797,672 (and torchvision's state_dict keys). The stem's
conv (:class:`StemConv`) computes its input's gradient, which a transformer in
front needs, by a faster route (about 2x on the CPU). Initialisation as torchvision documents it:
convs ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``, batch norm
weight 1 and bias 0, the linear layer PyTorch's default.

Input size: the standard stem divides the side by 4 and the stages by 8 more,
so a 32x32 input reaches the last stage at 1x1 (any size runs, as the
average pool is adaptive, but below 32 px the last stages see single pixels
padded with zeros). ``small_input=True`` swaps the stem for a 3x3 stride-1
conv without max-pool (the CIFAR ResNets' stem), keeping 4x more resolution:
a 32x32 input ends at 4x4. The :data:`BACKBONES` factories take it for
inputs whose shorter side is below 64 px and refuse inputs below 32 px.

References:
    K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image
    Recognition", CVPR 2016 (arXiv:1512.03385), table 1.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_image, check_int, check_size, is_tracing
from .classifiers import CNN

RESNET_STAGES = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
MIN_SIZE = 32  # the smallest side the BACKBONES' ResNets take
SMALL_INPUT_BELOW = 64  # the BACKBONES' ResNets use the small-input stem below this side


class _StemConvFunction(torch.autograd.Function):
    """conv 7x7, stride 2, padding 3 (no bias), with a faster gradient for its input.

    The forward is ``F.conv2d``'s. The input's gradient, the transposed convolution,
    is computed as a stride-1 transposed convolution on the space-to-depth view
    (the 7x7 stride-2 kernel zero-padded to 8x8 is a 4x4 kernel on 4x the channels,
    then ``pixel_shuffle``): the same sums in another order (float rounding aside),
    about twice as fast on the CPU as torch's for a 3-channel input. A transformer
    in front of the backbone needs that gradient every step (it trains through the
    warped image).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, stride=2, padding=3)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            o, c = weight.shape[:2]
            # k[o, 4 c' + 2 s + r, t, u] = w8[o, c', 2 t + s, 2 u + r]: the padded input's pixel
            # (2 a + s, 2 b + r) of channel c' is pixel (a, b) of channel 4 c' + 2 s + r after pixel_unshuffle
            k = F.pad(weight, (0, 1, 0, 1)).view(o, c, 4, 2, 4, 2).permute(0, 1, 3, 5, 2, 4).reshape(o, 4 * c, 4, 4)
            padded = F.pixel_shuffle(F.conv_transpose2d(grad, k), 2)  # the gradient of the 3-px-padded input
            h, w = x.shape[-2:]
            grad_x = padded[:, :, 3 : 3 + h, 3 : 3 + w]
        if ctx.needs_input_grad[1]:
            grad_w = torch.nn.grad.conv2d_weight(x, weight.shape, grad, stride=2, padding=3)
        return grad_x, grad_w


class StemConv(nn.Conv2d):
    """The ResNet stem's conv 7x7, stride 2, padding 3, no bias: an ``nn.Conv2d`` (same
    parameters, same forward) whose input gradient, when one is needed on the CPU, is
    computed about twice as fast (:class:`_StemConvFunction`)."""

    def __init__(self, in_channels: int, out_channels: int = 64):
        super().__init__(in_channels, out_channels, 7, stride=2, padding=3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        # measured on the CPU only (oneDNN); on a GPU the plain conv's backward (cuDNN) is kept
        if x.requires_grad and x.device.type == "cpu" and torch.is_grad_enabled() and not is_tracing():
            return _StemConvFunction.apply(x, self.weight)
        return super().forward(x)


class BasicBlock(nn.Module):
    """conv 3x3 -> BN -> ReLU -> conv 3x3 -> BN, plus the shortcut (1x1 conv + BN when the shape changes), -> ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """A BasicBlock ResNet: stem -> 4 stages -> adaptive average pool -> linear.

    Shapes: input ``(B, in_channels, H, W)``, any ``H, W`` (see the module's
    notes on small inputs); output ``(B, num_classes)`` logits.

    Args:
        stages: BasicBlocks per stage (``(2, 2, 2, 2)``: ResNet-18).
        in_channels: the input's channels.
        num_classes: the linear layer's outputs.
        small_input: the CIFAR stem (conv 3x3 stride 1, no max-pool) instead of
            conv 7x7 stride 2 + max-pool, for inputs below 64 px.
        zero_init_residual: start each block's last batch norm at weight 0, so
            each block starts as its shortcut (Goyal et al. 2017; off by default, as in torchvision).

    Example:
        >>> import torch
        >>> ResNet((2, 2, 2, 2), in_channels=1, num_classes=10, small_input=True)(torch.rand(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        stages: tuple[int, ...],
        in_channels: int = 3,
        num_classes: int = 1000,
        small_input: bool = False,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        check_int("num_classes", num_classes)
        if len(stages) != 4 or not all(isinstance(n, int) and n >= 1 for n in stages):
            raise ValueError(f"stages must be 4 positive ints (blocks per stage), got {stages!r}")
        self.small_input = bool(small_input)
        if self.small_input:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = StemConv(in_channels, 64)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if self.small_input else nn.MaxPool2d(3, stride=2, padding=1)
        width = 64
        for i, (blocks, channels) in enumerate(zip(stages, (64, 128, 256, 512)), start=1):
            stride = 1 if i == 1 else 2
            layers = [BasicBlock(width, channels, stride)] + [BasicBlock(channels, channels) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            width = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = check_image("x", x)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (B, {self.in_channels}, H, W) for this ResNet, got shape {tuple(x.shape)}"
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18(in_channels: int = 3, num_classes: int = 1000, small_input: bool = False, **options) -> ResNet:
    """ResNet-18 (BasicBlocks ``[2, 2, 2, 2]``); 11,689,512 parameters with 3 channels and 1000 classes.

    ``options``: :class:`ResNet`'s ``zero_init_residual``.

    Example:
        >>> import torch
        >>> resnet18(num_classes=10)(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """
    return ResNet(RESNET_STAGES["resnet18"], in_channels, num_classes, small_input, **options)


def resnet34(in_channels: int = 3, num_classes: int = 1000, small_input: bool = False, **options) -> ResNet:
    """ResNet-34 (BasicBlocks ``[3, 4, 6, 3]``); 21,797,672 parameters with 3 channels and 1000 classes."""
    return ResNet(RESNET_STAGES["resnet34"], in_channels, num_classes, small_input, **options)


def _resnet_factory(build: Callable[..., ResNet]) -> Callable[..., nn.Module]:
    def factory(in_channels: int, in_size: tuple[int, int], num_classes: int) -> nn.Module:
        h, w = check_size("in_size", in_size)
        if min(h, w) < MIN_SIZE:
            raise ValueError(f"in_size must be at least ({MIN_SIZE}, {MIN_SIZE}) for a ResNet backbone, got {(h, w)}")
        return build(in_channels, num_classes, small_input=min(h, w) < SMALL_INPUT_BELOW)

    factory.__doc__ = f"{build.__name__} for ``(in_channels, *in_size)`` inputs (the small-input stem below 64 px)."
    return factory


def _cnn(in_channels: int, in_size: tuple[int, int], num_classes: int) -> nn.Module:
    """The paper's CNN (:class:`stnkit.models.CNN`) for ``(in_channels, *in_size)`` inputs."""
    return CNN(in_channels, in_size, num_classes)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "cnn": _cnn,
    "resnet18": _resnet_factory(resnet18),
    "resnet34": _resnet_factory(resnet34),
}


def load_backbone(spec: str) -> Callable[..., nn.Module]:
    """A backbone factory: a :data:`BACKBONES` name, or a user's ``"package.module:callable"``.

    The returned factory takes ``(in_channels=, in_size=, num_classes=)`` keywords
    and checks that the result is an ``nn.Module``. A spec with ``':'`` is
    resolved with :func:`importlib.import_module`, which **imports and runs that
    module's code**: it is the user's own code, named by the user, as with
    torch.hub's entry points; never pass a spec from an untrusted source.

    Example:
        >>> net = load_backbone("resnet18")(in_channels=1, in_size=(32, 32), num_classes=10)
        >>> net.small_input
        True
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str (a backbone name or 'package.module:callable'), got {type(spec).__name__}")
    if ":" not in spec:
        if spec not in BACKBONES:
            raise ValueError(
                f"unknown backbone {spec!r}; valid names: {', '.join(BACKBONES)}, or 'package.module:callable'"
            )
        build, name = BACKBONES[spec], spec
    else:
        module_name, _, attr = spec.partition(":")
        if not module_name or not attr:
            raise ValueError(f"spec must be 'package.module:callable', got {spec!r}")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(f"backbone spec {spec!r}: cannot import module {module_name!r} ({err})") from None
        build = module
        for part in attr.split("."):
            if not hasattr(build, part):
                raise ValueError(f"backbone spec {spec!r}: module {module_name!r} has no attribute {attr!r}")
            build = getattr(build, part)
        if not callable(build):
            raise TypeError(f"backbone spec {spec!r} must name a callable, got {type(build).__name__}")
        name = spec

    def factory(in_channels: int, in_size: tuple[int, int], num_classes: int) -> nn.Module:
        net = build(in_channels=in_channels, in_size=in_size, num_classes=num_classes)
        if not isinstance(net, nn.Module):
            raise TypeError(f"backbone {name!r} must return an nn.Module, got {type(net).__name__}")
        return net

    return factory


__all__ = ["BACKBONES", "BasicBlock", "ResNet", "StemConv", "load_backbone", "resnet18", "resnet34"]
