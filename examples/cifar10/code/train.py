"""Train the PyTorch tutorial net on CIFAR-10 from the original `cifar-10-batches-py` pickles.

Reads the batches with numpy (no torchvision), normalises exactly as the tutorial's
``ToTensor() + Normalize((0.5,)*3, (0.5,)*3)`` does, and saves ``models/cifar_net.pth``.

    python -m code.train [--epochs 2] [--batch-size 32] [--lr 0.01] [--device cpu]
"""

from __future__ import annotations

import argparse
import pickle
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .cnn import Net

ROOTDIR = Path(__file__).parent.parent
BATCHES = ROOTDIR / "data" / "cifar-10-batches-py"


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as fh:
        content = pickle.load(fh, encoding="bytes")
    images = np.asarray(content[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(content[b"labels"], dtype=np.int64)


def normalise(images: np.ndarray) -> torch.Tensor:
    """uint8 NCHW -> float in [-1, 1], the tutorial's transform."""
    return torch.from_numpy((images.astype(np.float32) / 255.0 - 0.5) / 0.5)


def load_split(batches: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    parts = [load_batch(batches / n) for n in names if (batches / n).exists()]
    if not parts:
        raise SystemExit(f"no CIFAR-10 batches under {batches}; run `make data` first")
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return normalise(images), torch.from_numpy(labels)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(images), 1000):
            out = model(images[start : start + 1000].to(device))
            correct += int((out.argmax(1).cpu() == labels[start : start + 1000]).sum())
    model.train()
    return correct / len(images)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--data", type=Path, default=BATCHES, help="the cifar-10-batches-py folder")
    ap.add_argument("--out", type=Path, default=ROOTDIR / "models" / "cifar_net.pth")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    train_x, train_y = load_split(args.data, train=True)
    test_x, test_y = load_split(args.data, train=False)
    model = Net().to(device)
    loss_fn = nn.CrossEntropyLoss()
    optimiser = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    generator = torch.Generator().manual_seed(args.seed)
    print(f"training on {len(train_x)} images, testing on {len(test_x)}, device {device}")
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(train_x), generator=generator)
        running = 0.0
        for step, start in enumerate(range(0, len(order), args.batch_size), 1):
            idx = order[start : start + args.batch_size]
            optimiser.zero_grad()
            loss = loss_fn(model(train_x[idx].to(device)), train_y[idx].to(device))
            loss.backward()
            optimiser.step()
            running += loss.item()
        acc = accuracy(model, test_x, test_y, device)
        print(f"epoch {epoch}: loss {running / step:.3f}, test accuracy {acc:.2%}, {time.perf_counter() - started:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(args.out)
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
