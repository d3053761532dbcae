#!/usr/bin/env python3
"""Make tests/fixtures/torch_article_mlp.safetensors: the article's MLP trained by PyTorch.

The MLP of scripts/torch_modules.py with hidden (30, 10), PyTorch's own initialisation,
Adam(1e-3), batch 32, on the first 55,000 training images, seed 7, then saved with
`safetensors.torch.save_file(model.state_dict(), ...)` (no metadata: trainer reads the
network from the shapes). Its test loss and accuracy on the 10,000 test images, as PyTorch
measures them, go to tests/fixtures/torch_article_mlp.json; `cargo test` evaluates the file
with trainer and compares. PyTorch is too large for CI, so the fixture is committed.

Usage: torch_fixture.py DATA_DIR [--epochs 3]   (needs torch, numpy, safetensors)
"""
import argparse
import json
import os
import sys

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from check_interop import read_idx  # noqa: E402
from torch_modules import MLP  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir")
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(7)
    torch.set_num_threads(2)

    def load(stem):
        return read_idx(os.path.join(args.data_dir, stem + ".gz"))

    x = torch.tensor(load("train-images-idx3-ubyte")[:55000].astype(np.float32) / 255.0)
    y = torch.tensor(load("train-labels-idx1-ubyte")[:55000].astype(np.int64))
    xt = torch.tensor(load("t10k-images-idx3-ubyte").astype(np.float32) / 255.0)
    yt = torch.tensor(load("t10k-labels-idx1-ubyte").astype(np.int64))
    model = MLP((30, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(args.epochs):
        for batch in torch.randperm(len(x)).split(32):
            opt.zero_grad()
            F.cross_entropy(model(x[batch].unsqueeze(1)), y[batch]).backward()
            opt.step()
    with torch.no_grad():
        logits = model(xt.unsqueeze(1))
        loss = F.cross_entropy(logits, yt).item()
        accuracy = (logits.argmax(1) == yt).float().mean().item()
    os.makedirs(OUT, exist_ok=True)
    safetensors.torch.save_file(model.state_dict(), os.path.join(OUT, "torch_article_mlp.safetensors"))
    record = {
        "test_loss": round(loss, 6),
        "test_accuracy": round(accuracy, 6),
        "test_images": len(yt),
        "torch": torch.__version__,
        "epochs": args.epochs,
        "seed": 7,
    }
    with open(os.path.join(OUT, "torch_article_mlp.json"), "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
