#!/usr/bin/env python3
"""Check trainer's exported files with other tools, on the real MNIST test set.

Given a run directory, the model exported from it as safetensors and as ONNX, and the
per-image predictions `trainer evaluate --predictions` wrote for the same model, this checks
that

  * NumPy code written for PyTorch's layout (the README's modules: Linear weights [out, in],
    conv weights [out, in, 3, 3], NCHW flatten) classifies the test images as trainer does;
  * ONNX Runtime runs the ONNX file (input `pixels` [N, 1, 28, 28], output `probabilities`
    [N, 10], any batch size) and classifies them as trainer does;
  * TensorBoard's own reader (EventAccumulator) reads the run's event file back with one
    point per epoch and per tag, equal to history.csv.

"As trainer does": the same class for at least 9,995 of the 10,000 images and the same
accuracy to 0.0005 (float sums in another order may flip an exact tie). Prints one line of
figures and exits 1 with a reason on the first failed check.

Needs: numpy, safetensors, onnxruntime, tensorboard (scripts/requirements-tests.txt).
Usage: check_interop.py --data-dir DIR --run RUN --safetensors F --onnx F --predictions CSV
"""
import argparse
import csv
import gzip
import os
import struct
import sys

import numpy as np


def fail(why):
    print(f"check_interop: FAILED: {why}", file=sys.stderr)
    sys.exit(1)


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def test_set(data_dir):
    def find(stem):
        for name in (stem + ".gz", stem):
            path = os.path.join(data_dir, name)
            if os.path.exists(path):
                return path
        fail(f"{stem} not in {data_dir}")

    images = read_idx(find("t10k-images-idx3-ubyte")).astype(np.float32) / np.float32(255.0)
    labels = read_idx(find("t10k-labels-idx1-ubyte")).astype(np.int64)
    return images.reshape(-1, 1, 28, 28), labels


def conv3x3(x, weight, bias):
    """PyTorch's Conv2d(kernel 3, padding 1) on NCHW, by im2col and one matrix product."""
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    # [n, c, h, w, 3, 3] -> [n, h, w, c*9]
    cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n, h, w, c * 9)
    out = cols @ weight.reshape(weight.shape[0], -1).T + bias
    return out.transpose(0, 3, 1, 2)


def maxpool2(x):
    n, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    x = x[:, :, : h2 * 2, : w2 * 2].reshape(n, c, h2, 2, w2, 2)
    return x.max(axis=(3, 5))


def numpy_forward(tensors, images):
    """The README's PyTorch modules, in NumPy: probabilities [N, 10]."""
    relu = lambda v: np.maximum(v, 0)
    x = images
    conv = 1
    while f"conv{conv}.weight" in tensors:
        x = maxpool2(relu(conv3x3(x, tensors[f"conv{conv}.weight"], tensors[f"conv{conv}.bias"])))
        conv += 1
    x = x.reshape(x.shape[0], -1)
    layers = sum(1 for k in tensors if k.startswith("fc") and k.endswith(".weight"))
    for i in range(1, layers + 1):
        x = x @ tensors[f"fc{i}.weight"].T + tensors[f"fc{i}.bias"]
        if i < layers:
            x = relu(x)
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def agree(name, classes, trainer, labels):
    same = int((classes == trainer).sum())
    acc, acc_trainer = float((classes == labels).mean()), float((trainer == labels).mean())
    if same < len(labels) - 5:
        fail(f"{name}: the same class as trainer for only {same} of {len(labels)} images")
    if abs(acc - acc_trainer) > 0.0005:
        fail(f"{name}: accuracy {acc:.4f}, trainer's {acc_trainer:.4f}")
    return f"{name} {same}/{len(labels)} same, accuracy {acc:.4f} (trainer {acc_trainer:.4f})"


def check_onnx(path, images):
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != ["pixels"] or [o.name for o in outputs] != ["probabilities"]:
        fail(f"{path}: inputs {[i.name for i in inputs]}, outputs {[o.name for o in outputs]}")
    if inputs[0].shape[1:] != [1, 28, 28] or isinstance(inputs[0].shape[0], int):
        fail(f"{path}: input shape {inputs[0].shape}, expected [N, 1, 28, 28] with N free")
    probs = session.run(None, {"pixels": images})[0]
    one = session.run(None, {"pixels": images[:1]})[0]
    if probs.shape != (len(images), 10) or one.shape != (1, 10):
        fail(f"{path}: output shapes {probs.shape} and {one.shape}")
    return probs


def check_events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run)
    acc.Reload()
    with open(os.path.join(run, "history.csv")) as f:
        history = list(csv.DictReader(f))
    columns = {
        "loss/train": "train_loss",
        "accuracy/train": "train_acc",
        "loss/validation": "val_loss",
        "accuracy/validation": "val_acc",
    }
    tags = acc.Tags()["scalars"]
    for tag, column in columns.items():
        if tag not in tags:
            fail(f"{run}: no {tag} in the event file (tags: {tags})")
        events = acc.Scalars(tag)
        steps = [e.step for e in events]
        if steps != [int(row["epoch"]) for row in history]:
            fail(f"{run}: {tag} at steps {steps}, history.csv has epochs 1..{len(history)}")
        for e, row in zip(events, history):
            want = np.float32(float(row[column]))
            if np.float32(e.value) != want:
                fail(f"{run}: {tag} at epoch {e.step} is {e.value}, history.csv says {want}")
    test = acc.Scalars("test/accuracy")
    if len(test) != 1:
        fail(f"{run}: {len(test)} test/accuracy points, expected 1")
    return f"events {len(history)} epochs x {len(tags)} tags equal history.csv"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--safetensors", required=True)
    p.add_argument("--onnx", required=True)
    p.add_argument("--predictions", required=True)
    args = p.parse_args()

    from safetensors.numpy import load_file

    images, labels = test_set(args.data_dir)
    with open(args.predictions) as f:
        trainer = np.array([int(r["predicted"]) for r in csv.DictReader(f)])
    if len(trainer) != len(labels):
        fail(f"{args.predictions}: {len(trainer)} predictions for {len(labels)} images")

    tensors = load_file(args.safetensors)
    numpy_probs = numpy_forward(tensors, images)
    onnx_probs = check_onnx(args.onnx, images)
    gap = float(np.abs(numpy_probs - onnx_probs).max())
    if gap > 1e-4:
        fail(f"ONNX Runtime and NumPy probabilities differ by up to {gap}")
    print(
        "; ".join(
            [
                agree("numpy", numpy_probs.argmax(1), trainer, labels),
                agree("onnxruntime", onnx_probs.argmax(1), trainer, labels),
                f"largest probability gap numpy/onnxruntime {gap:.1e}",
                check_events(args.run),
            ]
        )
    )


if __name__ == "__main__":
    main()
