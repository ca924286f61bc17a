"""Hand-written PyTorch fixture models for onnxprune's test zoo.

Only imported by scripts/build_fixtures.py. Requires torch (``pip install torch==2.13.0``);
the onnxprune package itself never imports torch.

Every builder returns ``(model, example_input)``; the model is in eval mode with randomized
normalization statistics/affine parameters so that BatchNorm & co. are not identities.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def seed_all(seed: int = 0) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def randomize_norms(model: nn.Module, in_shape, calib_batches: int = 4) -> nn.Module:
    """Randomize norm-layer affine params, then calibrate BN running stats on random data.

    Calibration keeps activations at a sane scale for a random-init net; the resulting running
    mean/var are non-trivial (and the affine params random) so BN is never the identity.
    """
    norm_types = (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, norm_types) and getattr(mod, "weight", None) is not None:
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0.0, 0.1)
            if isinstance(mod, nn.BatchNorm2d):
                mod.momentum = None  # cumulative average during calibration
                mod.reset_running_stats()
        model.train()
        for _ in range(calib_batches):
            model(torch.randn(8, *in_shape[1:]))
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                # small extra perturbation so stats are clearly not "fresh" values
                mod.running_mean.add_(torch.randn_like(mod.running_mean) * 0.05)
                mod.running_var.mul_(torch.empty_like(mod.running_var).uniform_(0.8, 1.25))
                mod.momentum = 0.1
    model.eval()
    return model


def conv_bn(cin, cout, k=3, s=1, groups=1, act=None):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


def make_divisible(v, d=8):
    return max(d, int(v + d / 2) // d * d)


# --------------------------------------------------------------------------------------
# 1. ResNet (BasicBlock)
# --------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class ResNetBasic(nn.Module):
    def __init__(self, widths=(16, 32, 48), blocks=(2, 2, 1), num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(cin, w, stride=2 if (i > 0 and j == 0) else 1))
                cin = w
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def build_resnet_basic():
    shape = (1, 3, 32, 32)
    return randomize_norms(ResNetBasic(), shape), torch.randn(*shape)


def build_resnet_dynamo():
    shape = (1, 3, 32, 32)
    return randomize_norms(ResNetBasic(widths=(16, 32, 48), blocks=(1, 1, 1)), shape), torch.randn(*shape)


# --------------------------------------------------------------------------------------
# 2./3. ResNet bottleneck & ResNeXt
# --------------------------------------------------------------------------------------
class Bottleneck(nn.Module):
    def __init__(self, cin, width, cout, stride=1, groups=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


class ResNetBottleneck(nn.Module):
    """stages: list of (width, cout, stride, n_blocks); expansion = cout / width."""

    def __init__(self, stages, groups=1, stem=16, num_classes=10):
        super().__init__()
        self.stem = conv_bn(3, stem, 3, 1, act=nn.ReLU(inplace=True))
        layers, cin = [], stem
        for width, cout, stride, n in stages:
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(cin, width, cout, stride if j == 0 else 1, groups))
                cin = cout
            layers.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def build_resnet_bottleneck():
    shape = (1, 3, 32, 32)
    # expansion 4: width 8 -> 32, width 16 -> 64
    m = ResNetBottleneck([(8, 32, 1, 2), (16, 64, 2, 2)])
    return randomize_norms(m, shape), torch.randn(*shape)


def build_resnext():
    shape = (1, 3, 32, 32)
    # grouped 3x3 (groups=4, width 32)
    m = ResNetBottleneck([(32, 64, 1, 2), (32, 64, 2, 1)], groups=4)
    return randomize_norms(m, shape), torch.randn(*shape)


# --------------------------------------------------------------------------------------
# 4. MobileNetV2
# --------------------------------------------------------------------------------------
class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hid = cin * t
        self.use_res = stride == 1 and cin == cout
        layers = []
        if t != 1:
            layers.append(conv_bn(cin, hid, 1, act=nn.ReLU6(inplace=True)))
        layers += [
            conv_bn(hid, hid, 3, stride, groups=hid, act=nn.ReLU6(inplace=True)),
            nn.Conv2d(hid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=10, squeeze_head=False):
        super().__init__()
        self.squeeze_head = squeeze_head
        cfg = [(1, 8, 1), (4, 16, 2), (4, 16, 1), (4, 24, 2), (4, 24, 1)]  # (t, c, s)
        layers, cin = [conv_bn(3, 16, 3, 2, act=nn.ReLU6(inplace=True))], 16
        for t, c, s in cfg:
            layers.append(InvertedResidual(cin, c, s, t))
            cin = c
        layers.append(conv_bn(cin, 64, 1, act=nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, 1)
        x = x.squeeze(3).squeeze(2) if self.squeeze_head else torch.flatten(x, 1)
        return self.classifier(x)


def build_mobilenetv2():
    shape = (1, 3, 32, 32)
    return randomize_norms(MobileNetV2(), shape), torch.randn(*shape)


def build_mobilenetv2_squeeze():
    """same weights as build_mobilenetv2 (same seed/order), head uses squeeze -> Squeeze op."""
    shape = (1, 3, 32, 32)
    return randomize_norms(MobileNetV2(squeeze_head=True), shape), torch.randn(*shape)


# --------------------------------------------------------------------------------------
# 5. MobileNetV3
# --------------------------------------------------------------------------------------
class SqueezeExciteHS(nn.Module):
    def __init__(self, c):
        super().__init__()
        sq = make_divisible(c // 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, sq, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(sq, c, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        s = self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))
        return x * s


class MBv3Block(nn.Module):
    def __init__(self, cin, exp, cout, k, se, act, stride):
        super().__init__()
        self.use_res = stride == 1 and cin == cout
        layers = []
        if exp != cin:
            layers.append(conv_bn(cin, exp, 1, act=act()))
        layers.append(conv_bn(exp, exp, k, stride, groups=exp, act=act()))
        if se:
            layers.append(SqueezeExciteHS(exp))
        layers.append(conv_bn(exp, cout, 1))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res else y


class MobileNetV3(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        RE, HS = nn.ReLU, nn.Hardswish
        cfg = [  # cin, exp, cout, k, se, act, stride
            (16, 16, 16, 3, True, RE, 2),
            (16, 48, 24, 3, False, RE, 2),
            (24, 64, 24, 3, False, RE, 1),
            (24, 72, 32, 5, True, HS, 2),
            (32, 96, 32, 5, True, HS, 1),
        ]
        layers = [conv_bn(3, 16, 3, 2, act=nn.Hardswish())]
        layers += [MBv3Block(*c) for c in cfg]
        layers.append(conv_bn(32, 96, 1, act=nn.Hardswish()))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(96, 64), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(64, num_classes)
        )

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def build_mobilenetv3():
    shape = (1, 3, 32, 32)
    return randomize_norms(MobileNetV3(), shape), torch.randn(*shape)


# --------------------------------------------------------------------------------------
# 6. EfficientNet (MBConv + SiLU + SE)
# --------------------------------------------------------------------------------------
class SESigmoid(nn.Module):
    def __init__(self, c, sq):
        super().__init__()
        self.reduce = nn.Conv2d(c, sq, 1)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(sq, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        s = torch.sigmoid(self.expand(self.act(self.reduce(s))))
        return x * s


class MBConv(nn.Module):
    def __init__(self, cin, cout, k, stride, expand):
        super().__init__()
        hid = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = []
        if expand != 1:
            layers.append(conv_bn(cin, hid, 1, act=nn.SiLU()))
        layers.append(conv_bn(hid, hid, k, stride, groups=hid, act=nn.SiLU()))
        layers.append(SESigmoid(hid, max(4, cin // 4)))
        layers.append(conv_bn(hid, cout, 1))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res else y


class EfficientNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2, act=nn.SiLU())
        cfg = [(16, 8, 3, 1, 1), (8, 16, 3, 2, 4), (16, 16, 5, 1, 4), (16, 24, 5, 2, 4)]
        self.blocks = nn.Sequential(*[MBConv(*c) for c in cfg])
        self.head_conv = nn.Conv2d(24, 64, 1, bias=False)
        self.head_bn = nn.BatchNorm2d(64)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        x = self.head_bn(self.head_conv(x))
        x = x * torch.sigmoid(x)  # explicit swish -> Sigmoid + Mul
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(self.dropout(x))


def build_efficientnet():
    shape = (1, 3, 32, 32)
    return randomize_norms(EfficientNet(), shape), torch.randn(*shape)


# --------------------------------------------------------------------------------------
# 7. ConvNeXt
# --------------------------------------------------------------------------------------
class LayerNormCF(nn.Module):
    """channels-first LayerNorm via permute -> nn.LayerNorm -> permute."""

    def __init__(self, c):
        super().__init__()
        self.ln = nn.LayerNorm(c, eps=1e-6)

    def forward(self, x):
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.empty(dim).uniform_(0.2, 0.8))  # layer scale

    def forward(self, x):
        inp = x
        x = self.dwconv(x).permute(0, 2, 3, 1)  # NCHW -> NHWC
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        x = self.gamma * x
        return inp + x.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, dims=(16, 32), depths=(2, 1), num_classes=10):
        super().__init__()
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNormCF(dims[0]))]
        )
        for i in range(1, len(dims)):
            self.downsample_layers.append(
                nn.Sequential(LayerNormCF(dims[i - 1]), nn.Conv2d(dims[i - 1], dims[i], 2, 2))
            )
        self.stages = nn.ModuleList(
            [nn.Sequential(*[ConvNeXtBlock(d) for _ in range(n)]) for d, n in zip(dims, depths)]
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        for ds, st in zip(self.downsample_layers, self.stages):
            x = st(ds(x))
        x = self.norm(x.mean([-2, -1]))
        return self.head(x)


def build_convnext():
    shape = (1, 3, 32, 32)
    return randomize_norms(ConvNeXt(), shape), torch.randn(*shape)


# --------------------------------------------------------------------------------------
# 8. DenseNet
# --------------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size=4):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x):
        y = self.conv1(F.relu(self.norm1(x)))
        y = self.conv2(F.relu(self.norm2(y)))
        return torch.cat([x, y], 1)


class Transition(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False),
                         nn.AvgPool2d(2, 2))


class DenseNet(nn.Module):
    def __init__(self, growth=8, layers=(3, 3), stem=16, num_classes=10):
        super().__init__()
        feats, c = [nn.Conv2d(3, stem, 3, 1, 1, bias=False)], stem
        for i, n in enumerate(layers):
            for _ in range(n):
                feats.append(DenseLayer(c, growth))
                c += growth
            if i != len(layers) - 1:
                feats.append(Transition(c, c // 2))
                c //= 2
        feats += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def build_densenet():
    shape = (1, 3, 32, 32)
    return randomize_norms(DenseNet(), shape), torch.randn(*shape)


# --------------------------------------------------------------------------------------
# 9. C2f (YOLOv8 style)
# --------------------------------------------------------------------------------------
class Conv(nn.Module):
    """YOLO Conv: conv + BN + SiLU."""

    def __init__(self, cin, cout, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class YoloBottleneck(nn.Module):
    def __init__(self, c, shortcut=True):
        super().__init__()
        self.cv1 = Conv(c, c, 3)
        self.cv2 = Conv(c, c, 3)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    def __init__(self, c1, c2, n=2, shortcut=True, use_split=False):
        super().__init__()
        self.use_split = use_split
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(YoloBottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        if self.use_split:  # ultralytics C2f.forward_split: equal split -> Split
            y = list(self.cv1(x).split((self.c, self.c), 1))
        else:  # chunk(2, 1): TorchScript opset 17 -> Shape/Gather/Add/Div/Mul + 2 Slice
            y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SplitUnequal(nn.Module):
    """cv1 -> split((a, b)) with a != b -> bottleneck on b -> cat(a, b, m(b)) -> 1x1 conv."""

    def __init__(self, c1, c2, a=16, b=32):
        super().__init__()
        self.a, self.b = a, b
        self.cv1 = Conv(c1, a + b, 1)
        self.m = YoloBottleneck(b, shortcut=False)
        self.cv2 = Conv(a + 2 * b, c2, 1)

    def forward(self, x):
        p, q = self.cv1(x).split((self.a, self.b), 1)
        return self.cv2(torch.cat([p, q, self.m(q)], 1))


class SliceCSP(nn.Module):
    """tensor slicing x[:, :c] / x[:, c:] (-> Slice) with one half processed."""

    def __init__(self, c1, c2):
        super().__init__()
        self.c = c1 // 2
        self.m = Conv(self.c, self.c, 3)
        self.cv = Conv(c1, c2, 1)

    def forward(self, x):
        x1, x2 = x[:, : self.c], x[:, self.c :]
        return self.cv(torch.cat([self.m(x1), x2], 1))


class C2fNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.b0 = Conv(3, 16, 3, 2)
        self.b1 = Conv(16, 32, 3, 2)
        self.c2f1 = C2f(32, 32, n=2, shortcut=True)
        self.b2 = Conv(32, 64, 3, 2)
        self.split = SplitUnequal(64, 48, a=16, b=32)
        self.slice = SliceCSP(48, 64)
        self.c2f2 = C2f(64, 64, n=1, shortcut=False, use_split=True)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.c2f1(self.b1(self.b0(x)))
        x = self.c2f2(self.slice(self.split(self.b2(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build_c2f():
    shape = (1, 3, 32, 32)
    return randomize_norms(C2fNet(), shape), torch.randn(*shape)


# --------------------------------------------------------------------------------------
# 10. U-Net
# --------------------------------------------------------------------------------------
class ConvBlock(nn.Module):
    def __init__(self, cin, cout, norm="bn"):
        super().__init__()

        def norm_layer(c):
            if norm == "in":
                return nn.InstanceNorm2d(c, affine=True)
            if norm == "gn":
                return nn.GroupNorm(4, c)
            return nn.BatchNorm2d(c)

        self.block = nn.Sequential(
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False), norm_layer(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.block(x)


class UNet(nn.Module):
    def __init__(self, n_classes=2):
        super().__init__()
        self.enc1 = ConvBlock(3, 16)
        self.enc2 = ConvBlock(16, 32, norm="in")
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ConvBlock(32, 64, norm="gn")
        # up level 1: ConvTranspose2d stride 2 + skip cat
        self.up1 = nn.ConvTranspose2d(64, 32, 2, stride=2)
        self.dec1 = ConvBlock(64, 32)
        # up level 2: nearest Upsample (-> Resize) + conv + skip cat
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.up2_conv = nn.Conv2d(32, 16, 3, 1, 1)
        self.dec2 = ConvBlock(32, 16)
        # F.pad + valid conv, then 1x1 classifier
        self.refine = nn.Conv2d(16, 16, 3, 1, 0)
        self.out = nn.Conv2d(16, n_classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)                    # 16 x 32 x 32
        e2 = self.enc2(self.pool(e1))        # 32 x 16 x 16
        b = self.bottleneck(self.pool(e2))   # 64 x 8 x 8
        d1 = self.dec1(torch.cat([self.up1(b), e2], 1))               # 32 x 16 x 16
        d2 = self.dec2(torch.cat([self.up2_conv(self.up2(d1)), e1], 1))  # 16 x 32 x 32
        d2 = F.relu(self.refine(F.pad(d2, (1, 1, 1, 1))))
        return self.out(d2)


def build_unet():
    shape = (1, 3, 32, 32)
    return randomize_norms(UNet(), shape), torch.randn(*shape)


# --------------------------------------------------------------------------------------
# 11. flatten / reshape heads, token MatMul
# --------------------------------------------------------------------------------------
class FlattenHead(nn.Module):
    def __init__(self, use_view=False, num_classes=10):
        super().__init__()
        self.use_view = use_view
        self.features = nn.Sequential(
            conv_bn(3, 8, 3, 2, act=nn.ReLU(inplace=True)),   # 16x16
            conv_bn(8, 16, 3, 2, act=nn.ReLU(inplace=True)),  # 8x8
            nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),                                  # 16 x 4 x 4
        )
        self.fc1 = nn.Linear(256, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), -1) if self.use_view else torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))


def build_flatten_head():
    shape = (1, 3, 32, 32)
    return randomize_norms(FlattenHead(False), shape), torch.randn(*shape)


def build_reshape_head():
    shape = (1, 3, 32, 32)
    return randomize_norms(FlattenHead(True), shape), torch.randn(*shape)


class MatMulTokens(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(
            conv_bn(3, 16, 3, 2, act=nn.ReLU(inplace=True)),  # 16x16
            nn.Conv2d(16, 32, 3, 2, 1),                       # 32 x 8 x 8
        )
        self.fc1 = nn.Linear(32, 64)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(64, 32)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.stem(x)
        b, c, h, w = x.shape
        t = x.reshape(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        t = self.fc2(self.act(self.fc1(t)))          # Linear on 3-D -> MatMul + Add
        return self.head(t.mean(1))


def build_matmul_tokens():
    shape = (1, 3, 32, 32)
    return randomize_norms(MatMulTokens(), shape), torch.randn(*shape)


# --------------------------------------------------------------------------------------
# 13. grouped / output_padding ConvTranspose
# --------------------------------------------------------------------------------------
class ConvTransposeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = conv_bn(3, 16, 3, 2, act=nn.ReLU(inplace=True))                # 16 x 16 x 16
        self.ct1 = nn.ConvTranspose2d(16, 16, 4, stride=2, padding=1, groups=2)   # 16 x 32 x 32
        self.bn1 = nn.BatchNorm2d(16)
        self.c2 = conv_bn(16, 24, 3, 2, act=nn.ReLU(inplace=True))               # 24 x 16 x 16
        self.ct2 = nn.ConvTranspose2d(24, 8, 3, stride=2, padding=1, output_padding=1)  # 8 x 32 x 32
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = F.relu(self.bn1(self.ct1(self.c1(x))))
        x = F.relu(self.ct2(self.c2(x)))
        return self.out(x)


def build_convtranspose_grouped():
    shape = (1, 3, 32, 32)
    return randomize_norms(ConvTransposeNet(), shape), torch.randn(*shape)
