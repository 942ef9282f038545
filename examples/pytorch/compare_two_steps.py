"""Checks cenet's training against PyTorch: two SGD steps of a ResNet-CE from the same
initial weights on the same images must give the same weights.

The Rust test suite never calls Python; CI runs this as a separate check
(`.ci/pytorch-check`, with --check). Needs torch, numpy and safetensors. Run from the
repository root:

    python3 examples/pytorch/compare_two_steps.py                  # builds and runs cenet
    python3 examples/pytorch/compare_two_steps.py --cifar target/release/examples/cifar --check

What it does:
1. writes a small CIFAR-10-format data folder (random pixels and labels, file order);
2. builds ResNet-20-CE in PyTorch with cenet's state-dict keys (the CE block is
   shared/spec/ce-block.md's forward written in torch ops; autograd does the backward) and
   saves its initial weights to a.safetensors;
3. runs `cifar train --model resnet20-ce --data DIR --init a.safetensors --no-augment
   --no-shuffle --steps 2 --batch-size 64 --lr 0.05 --momentum 0.9 --weight-decay 5e-4
   --save b.safetensors`;
4. takes the same two steps in PyTorch with torch.optim.SGD and cenet's default cosine
   schedule, in float64 and in float32, and reports per tensor the largest relative
   difference of cenet's weights from PyTorch's float64 ones (max |cenet - torch| /
   max |torch|), the same for the update (the change from the initial weights), and, for
   scale, how far PyTorch's own float32 update is from its float64 one;
5. loads cenet's b.safetensors into the PyTorch module with load_state_dict(strict=True).

With --check it exits with status 1 when a tensor's update differs from PyTorch's float64
one by more than max(UPDATE_FACTOR × PyTorch's own float32 difference, UPDATE_FLOOR). A
wrong formula shows as differences of order 1; float32 summation order alone gives a few
times PyTorch's float32 difference. One float32 run is one draw of rounding noise, and on
tensors whose gradients cancel heavily the draws vary several-fold (a LayerNorm bias of
the reweighting branch was off by 38 % under one PyTorch build and 6 % under another), so
PyTorch's float32 difference is the largest over its plain run and JITTER_RUNS runs whose
input pixels were moved by one float32 rounding step. The CE gates θ (`x_weight`) are the exception: each
gradient sums λ(1 − λ)·dY·(y_bd − y_ar) over every element of its block with heavy
cancellation, so any float32 implementation's error on it is a draw of rounding noise that
varies from layer to layer (PyTorch's own float32 run is off by 1e-4 on one gate and by
8e-2 on another). For them the float32 scale is the largest PyTorch float32 difference over
all the gates, not the one draw for that gate.
"""
import argparse
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

UPDATE_FACTOR = 4.0
UPDATE_FLOOR = 0.1
# Extra PyTorch float32 runs, each on inputs moved by float32 rounding noise, whose
# differences from float64 join the plain float32 run's in each tensor's float32 scale.
JITTER_RUNS = 3


def is_gate(name):
    """A CE gate θ, whose float32 scale is taken over all the gates (see the docstring)."""
    return name.split(".")[-2:] == ["ce", "x_weight"]


CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
CIFAR10_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


class AR(nn.Module):
    """The adaptive-reweighting branch's parameters and running scale (keys AR.*)."""

    def __init__(self, c, reduction=4):
        super().__init__()
        hidden = c // reduction
        self.fc = nn.Sequential(
            nn.Linear(c, hidden, bias=False),
            nn.LayerNorm(hidden, eps=1e-5),
            nn.ReLU(),
            nn.Linear(hidden, c, bias=False),
        )
        self.register_buffer("running_scale", torch.zeros(1))


class CE(nn.Module):
    """Channel Equilibrium as the released code computes it (training mode)."""

    def __init__(self, c, group_size=16, iterations=3, eps=1e-5, momentum=0.1):
        super().__init__()
        d = group_size
        while d > 1 and c % d:
            d //= 2
        self.d, self.g, self.T, self.eps, self.momentum = d, c // d, iterations, eps, momentum
        self.x_weight = nn.Parameter(torch.zeros(1))
        self.register_buffer("running_mean", torch.zeros(self.g, d, 1))
        self.register_buffer("running_wm", torch.eye(d).repeat(self.g, 1, 1))
        self.AR = AR(c)

    def forward(self, X):
        assert self.training, "this check only trains"
        n, c, h, w = X.shape
        g, d, m = self.g, self.d, n * h * w
        # Batch decorrelation: partial whitening of the uncentred input.
        x = X.transpose(0, 1).reshape(g, d, m)
        mu = x.mean(-1, keepdim=True)
        xc = x - mu
        eye = torch.eye(d, dtype=X.dtype).expand(g, d, d)
        sigma = self.eps * eye + xc @ xc.transpose(1, 2) / m
        trace = sigma.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None]
        s = sigma / trace
        p = eye
        for _ in range(self.T):
            p = 1.5 * p - 0.5 * (p @ p @ p) @ s
        y_bd = (p @ x).reshape(c, n, h, w).transpose(0, 1)
        # Adaptive reweighting from each sample's per-channel variance.
        v = X.reshape(n, c, h * w).var(-1, unbiased=True)
        gate = torch.sigmoid(self.AR.fc(v))
        kappa = v.mean().sqrt()
        y_ar = X * (gate / kappa)[:, :, None, None]
        lam = torch.sigmoid(self.x_weight)
        with torch.no_grad():
            mom = self.momentum
            self.running_wm.mul_(1 - mom).add_(mom * p)
            self.running_mean.mul_(1 - mom).add_(mom * mu)
            self.AR.running_scale.mul_(1 - mom).add_(mom * kappa)
        return lam * y_bd + (1 - lam) * y_ar


class BasicBlock(nn.Module):
    def __init__(self, cin, width, stride, ce):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.ce = CE(width) if ce else None
        self.downsample = None
        if stride != 1 or cin != width:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, width, 1, stride, 0, bias=False), nn.BatchNorm2d(width)
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.ce is not None:
            y = self.ce(y)
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y + shortcut)


class ResNet(nn.Module):
    """CIFAR ResNet-(6n+2) with cenet's layout and state-dict keys."""

    def __init__(self, depth=20, ce=True, classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.ce = CE(16) if ce else None
        cin = 16
        for stage, width in enumerate([16, 32, 64]):
            blocks = []
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(BasicBlock(cin, width, stride, ce))
                cin = width
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(64, classes)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.bn1(self.conv1(x))
        if self.ce is not None:
            x = self.ce(x)
        x = F.relu(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))


def write_data(folder, train_per_file, test_count, seed):
    """CIFAR-10 binary files of random images and labels; returns (images, labels) of the
    training set in file order."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    images, labels = [], []
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        count = test_count if name == "test_batch.bin" else train_per_file
        lab = rng.integers(0, 10, count, dtype=np.uint8)
        pix = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        records = np.concatenate([lab[:, None], pix], axis=1)
        records.tofile(os.path.join(folder, name))
        if name != "test_batch.bin":
            images.append(pix)
            labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)


def normalise(pixels):
    """cenet's normalisation, in float32 exactly as it computes it."""
    x = pixels.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255.0)
    return (x - CIFAR10_MEAN[None, :, None, None]) / CIFAR10_STD[None, :, None, None]


def cosine_lr(base, step, total):
    return base * 0.5 * (1.0 + math.cos(math.pi * step / total))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cifar", help="the cifar example binary (default: cargo run --release)")
    parser.add_argument("--work", help="folder for the data and weights (default: a temporary one)")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 when an update differs beyond the bound")
    parser.add_argument("--reuse", action="store_true",
                        help="compare with the b.safetensors already in --work (no cenet run)")
    args = parser.parse_args()

    work = args.work or tempfile.mkdtemp(prefix="cenet-vs-torch-")
    os.makedirs(work, exist_ok=True)
    batch, lr, momentum, wd, steps, epochs = 64, 0.05, 0.9, 5e-4, 2, 200
    per_file = 32  # 160 training images: 2 steps of 64 per epoch (the last 32 are dropped)
    data_dir = os.path.join(work, "data")
    pixels, labels = write_data(data_dir, per_file, 20, args.seed)

    torch.manual_seed(args.seed)
    model = ResNet(args.depth, ce=True)
    a_path = os.path.join(work, "a.safetensors")
    b_path = os.path.join(work, "b.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, a_path)

    model_name = f"resnet{args.depth}-ce"
    command = [args.cifar] if args.cifar else ["cargo", "run", "--release", "--example", "cifar", "--"]
    command += [
        "train", "--model", model_name, "--data", data_dir, "--init", a_path,
        "--no-augment", "--no-shuffle", "--steps", str(steps), "--batch-size", str(batch),
        "--lr", str(lr), "--momentum", str(momentum), "--weight-decay", str(wd),
        "--save", b_path, "--out", os.path.join(work, "run"), "--no-progress",
    ]
    print("running:", " ".join(command), flush=True)
    if not args.reuse:
        subprocess.run(command, check=True)

    initial = {k: v.to(torch.float64) for k, v in load_file(a_path).items()}
    steps_per_epoch = len(labels) // batch
    total_steps = epochs * steps_per_epoch

    def torch_steps(dtype, jitter=None):
        """Two steps in `dtype`; with a `jitter` seed, every input pixel is first moved by
        up to one float32 rounding step, relative 2⁻²³ (a run as valid as the plain one)."""
        rng = np.random.default_rng(jitter) if jitter is not None else None
        net = ResNet(args.depth, ce=True).to(dtype)
        net.load_state_dict(load_file(a_path))
        net.train()
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
        for step in range(steps):
            lo, hi = step * batch, (step + 1) * batch
            x = torch.from_numpy(normalise(pixels[lo:hi])).to(dtype)
            if rng is not None:
                x = x * torch.from_numpy(1 + rng.uniform(-1, 1, x.shape) * 2.0**-23).to(dtype)
            y = torch.from_numpy(labels[lo:hi].astype(np.int64))
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(lr, step, total_steps)
            optimizer.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
            print(f"torch {dtype}: step {step} loss {loss.item():.6f} lr {cosine_lr(lr, step, total_steps):.8f}")
        return {k: v.to(torch.float64) for k, v in net.state_dict().items()}

    reference = torch_steps(torch.float64)
    single = torch_steps(torch.float32)
    jittered = [torch_steps(torch.float32, jitter=args.seed * 100 + d) for d in range(JITTER_RUNS)]
    ours = {k: v.to(torch.float64) for k, v in load_file(b_path).items()}
    missing = set(reference) ^ set(ours)
    if missing:
        sys.exit(f"state dicts differ in keys: {sorted(missing)}")
    ResNet(args.depth, ce=True).load_state_dict(load_file(b_path), strict=True)
    print(f"PyTorch loads cenet's {os.path.basename(b_path)} with load_state_dict(strict=True)")

    def rel(got, want, scale):
        return (got - want).abs().max().item() / scale if scale > 0 else 0.0

    # Weights: max |cenet - torch64| / max |torch64|. Updates: the same for the change from
    # the initial weights, which isolates the two steps' arithmetic; PyTorch's own float32
    # run shows how much of that any float32 implementation differs by.
    # The float32 scale of a tensor's update: the largest difference from float64 over
    # PyTorch's plain float32 run and JITTER_RUNS runs on inputs moved by rounding noise.
    def torch_f32_update(name):
        delta = reference[name] - initial[name]
        scale = delta.abs().max().item()
        return max(rel(run[name] - initial[name], delta, scale) for run in [single] + jittered)

    gate_noise = max((torch_f32_update(n) for n in reference if is_gate(n)),
                     default=0.0)

    print(f"\n{'tensor':<40} {'weights':>10} {'update':>10} {'torch f32':>10}")
    worst = {"weights": (0.0, None), "update": (0.0, None), "torch f32": (0.0, None)}
    beyond = []
    for name, want in reference.items():
        if name.endswith("num_batches_tracked"):
            assert ours[name].item() == want.item(), name
            continue
        delta = want - initial[name]
        scale = delta.abs().max().item()
        row = {
            "weights": rel(ours[name], want, want.abs().max().item()),
            "update": rel(ours[name] - initial[name], delta, scale),
            "torch f32": torch_f32_update(name),
        }
        print(f"{name:<40} {row['weights']:10.2e} {row['update']:10.2e} {row['torch f32']:10.2e}")
        noise = gate_noise if is_gate(name) else row["torch f32"]
        if row["update"] > max(UPDATE_FACTOR * noise, UPDATE_FLOOR):
            beyond.append(f"{name} ({row['update']:.2e}, PyTorch float32 {noise:.2e})")
        for key, value in row.items():
            if value > worst[key][0]:
                worst[key] = (value, name)
    print(f"\nover {len(reference)} tensors, the largest relative differences from PyTorch float64:")
    for key, (value, name) in worst.items():
        label = {"weights": "cenet weights", "update": "cenet update",
                 "torch f32": "PyTorch float32 update"}[key]
        print(f"  {label:<24} {value:.3e}  ({name})")
    print(f"work folder: {work}")
    bound = (f"max({UPDATE_FACTOR:g} × PyTorch float32, {UPDATE_FLOOR:g}); for the CE gates "
             f"PyTorch float32 is their largest, {gate_noise:.2e}")
    if beyond:
        print(f"FAIL: {len(beyond)} updates differ by more than {bound}: {', '.join(beyond)}")
        if args.check:
            sys.exit(1)
    else:
        print(f"PASS: every update within {bound} of PyTorch float64 over {steps} steps")


if __name__ == "__main__":
    main()
