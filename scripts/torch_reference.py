#!/usr/bin/env python3
"""PyTorch reference of trainer's default recipe, timed the way trainer times itself.

The article's MLP (784-30-10-10, ReLU, logits into cross-entropy), or with --model cnn
trainer's CNN (3 x [3x3 conv, padding 1, ReLU, 2x2 max-pool] with 16/32/64 channels,
Dense(128, ReLU), Dense(10); 98,442 parameters) at a constant rate and without shifts (trainer
`--model cnn --augment 0 --lr-schedule constant`), Keras' initialisation
(Glorot-uniform weights, zero biases), Adam (lr 1e-3, betas 0.9/0.999, eps 1e-7), the
first 55,000 training images for training and the last 5,000 for validation, the 10,000
t10k images for the test, pixels / 255, a new shuffle every epoch, the last partial batch
kept. Data is decoded once into float tensors before the clock starts, as a PyTorch user
would do.

Per epoch it measures the training phase and the whole epoch (training + validation), and
prints one JSON object per line: {"epoch", "train_loss", "train_acc", "val_loss",
"val_acc", "train_seconds", "seconds"}, then {"test_loss", "test_acc", "total_seconds"}.
scripts/bench reads these lines.

Usage: torch_reference.py [--data-dir DIR] [--model mlp|cnn] [--epochs 30] [--batch-size 32]
                          [--threads 2] [--train-limit N]
Needs numpy and torch (`pip install numpy torch`).
"""
import argparse
import gzip
import json
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fetch_mnist import default_out_dir  # noqa: E402  (one place for the data-dir rule)


def read_idx(path):
    import numpy as np

    for candidate in (path + ".gz", path):
        if os.path.exists(candidate):
            opener = gzip.open if candidate.endswith(".gz") else open
            with opener(candidate, "rb") as f:
                data = f.read()
            dims = data[3]
            shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
            return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
    sys.exit(f"error: {path}(.gz) not found; run scripts/fetch_mnist.py")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_out_dir())
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--train-limit", type=int, default=None, help="train on the first N images only")
    args = parser.parse_args()

    # libgomp's spin-waiting makes 2-thread torch many times slower when anything else
    # runs on the cores; passive waiting is the fair setting on a shared machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    start = time.perf_counter()
    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    def load(images, labels):
        x = read_idx(os.path.join(args.data_dir, images)).reshape(-1, 784)
        y = read_idx(os.path.join(args.data_dir, labels))
        return torch.from_numpy(x.astype("float32") / 255.0), torch.from_numpy(y.astype("int64"))

    x_all, y_all = load("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    x_test, y_test = load("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    x_train, y_train = x_all[:55000][: args.train_limit], y_all[:55000][: args.train_limit]
    x_valid, y_valid = x_all[55000:], y_all[55000:]

    if args.model == "mlp":
        model = nn.Sequential(nn.Linear(784, 30), nn.ReLU(), nn.Linear(30, 10), nn.ReLU(), nn.Linear(10, 10))
    else:
        blocks = []
        for cin, cout in ((1, 16), (16, 32), (32, 64)):
            blocks += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        model = nn.Sequential(nn.Unflatten(1, (1, 28, 28)), *blocks, nn.Flatten(),
                              nn.Linear(64 * 3 * 3, 128), nn.ReLU(), nn.Linear(128, 10))
    for layer in model:
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)

    @torch.no_grad()
    def evaluate(x, y):
        # In chunks of 1,000, as trainer evaluates (the CNN's activations of 10,000 images at
        # once would take half a gigabyte).
        loss, correct = 0.0, 0
        for i in range(0, len(x), 1000):
            logits = model(x[i : i + 1000])
            loss += loss_fn(logits, y[i : i + 1000]).item() * len(logits)
            correct += (logits.argmax(1) == y[i : i + 1000]).sum().item()
        return loss / len(x), correct / len(x)

    n = len(x_train)
    for epoch in range(1, args.epochs + 1):
        epoch_start = time.perf_counter()
        order = torch.randperm(n)
        # Metrics summed as tensors: no host sync per step, as trainer does.
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.int64)
        for i in range(0, n, args.batch_size):
            idx = order[i : i + args.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            logits = model(xb)
            loss = loss_fn(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                loss_sum += loss.detach() * len(yb)
                correct += (logits.argmax(1) == yb).sum()
        loss_sum, correct = loss_sum.item(), correct.item()
        train_seconds = time.perf_counter() - epoch_start
        val_loss, val_acc = evaluate(x_valid, y_valid)
        print(json.dumps({
            "epoch": epoch,
            "train_loss": loss_sum / n,
            "train_acc": correct / n,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "train_seconds": train_seconds,
            "seconds": time.perf_counter() - epoch_start,
            "count": n,
        }), flush=True)
    test_loss, test_acc = evaluate(x_test, y_test)
    print(json.dumps({
        "test_loss": test_loss,
        "test_acc": test_acc,
        "total_seconds": time.perf_counter() - start,
    }), flush=True)


if __name__ == "__main__":
    main()
