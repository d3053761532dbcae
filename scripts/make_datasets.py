#!/usr/bin/env python3
"""Make data sets of other layouts from MNIST-format IDX files, to train `trainer` on.

Usage:
  make_datasets.py folder   [--data-dir DIR] --out DIR [--names NAMES] [--valid-last N] [--limit N] [--test-limit N]
  make_datasets.py csv      [--data-dir DIR] --out DIR [--limit N] [--test-limit N]
  make_datasets.py coloured [--data-dir DIR] --out DIR [--size S] [--limit N] [--test-limit N] [--seed K]
  make_datasets.py idx      --from DIR --out DIR

folder:   the training and test images as PNG pictures, OUT/train/<class>/NNNNN.png and
          OUT/test/<class>/NNNNN.png (torchvision's ImageFolder layout); --valid-last N puts
          the last N training images in OUT/valid/ instead (5000: the article's split);
          --names fashion names the classes as Fashion-MNIST's ten (T-shirt_top, Trouser, ...),
          otherwise they are the labels' numbers.
csv:      Kaggle's digit-recognizer layout, OUT/train.csv and OUT/test.csv, each
          `label,pixel0,...,pixelN`, in file order.
coloured: the known "coloured MNIST": each digit drawn in a foreground colour on a background
          colour (both seeded, per image) at S x S (default 32, the digit centred), as RGB PNG
          pictures in OUT/train/<digit>/ and OUT/test/<digit>/.
idx:      the inverse: a folder of gray PNG pictures (one sub-folder per class, train/ and
          test/) written as the four IDX files (labels in sorted class order) - a many-class
          IDX set from any folder.

--data-dir defaults to trainer's (the rule of scripts/fetch_mnist.py); --limit and
--test-limit take the first N training and test images. Nothing but Python's standard
library is needed (pictures are written and read with zlib).
"""
import argparse
import os
import random
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fetch_mnist import default_out_dir  # noqa: E402  (one place for the data-dir rule)
from digit_pngs import read_idx  # noqa: E402  (one IDX reader for the scripts)

FASHION = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]


def find(data_dir, name):
    for candidate in (name + ".gz", name):
        path = os.path.join(data_dir, candidate)
        if os.path.exists(path):
            return path
    sys.exit(f"make_datasets: error: {os.path.join(data_dir, name)}(.gz) not found")


def split(data_dir, prefix, limit):
    (count, height, width), pixels = read_idx(find(data_dir, f"{prefix}-images-idx3-ubyte"))
    _, labels = read_idx(find(data_dir, f"{prefix}-labels-idx1-ubyte"))
    count = min(count, limit) if limit else count
    size = height * width
    return [(pixels[i * size : (i + 1) * size], labels[i]) for i in range(count)], height, width


def png(width, height, rows, colour):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + bytes(row) for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2 if colour else 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def read_png(path):
    """(width, height, channels, pixels) of a PNG this script wrote (8-bit gray or RGB, no filter)."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"make_datasets: error: {path}: not a PNG")
    at, idat, width = 8, b"", None
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            if depth != 8 or colour not in (0, 2) or body[12] != 0:
                sys.exit(f"make_datasets: error: {path}: only 8-bit gray or RGB, not interlaced")
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    channels = 1 if colour == 0 else 3
    raw = zlib.decompress(idat)
    stride = width * channels
    rows = [raw[y * (stride + 1) : (y + 1) * (stride + 1)] for y in range(height)]
    if any(r[0] != 0 for r in rows):
        sys.exit(f"make_datasets: error: {path}: filtered rows (write it with this script)")
    return width, height, channels, b"".join(r[1:] for r in rows)


def write(path, body):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(body)


def folder(args):
    names = FASHION if args.names == "fashion" else None
    for part, prefix, limit in (("train", "train", args.limit), ("test", "t10k", args.test_limit)):
        images, height, width = split(args.data_dir, prefix, limit)
        valid_from = len(images) - args.valid_last if part == "train" else len(images)
        if valid_from < 1:
            sys.exit(f"make_datasets: error: --valid-last {args.valid_last} leaves no training images")
        counts = {}
        for i, (pixels, label) in enumerate(images):
            name = names[label] if names else str(label)
            rows = [pixels[y * width : (y + 1) * width] for y in range(height)]
            into = "valid" if i >= valid_from else part
            write(os.path.join(args.out, into, name, f"{i:05d}.png"), png(width, height, rows, False))
            counts[into] = counts.get(into, 0) + 1
        for into, n in counts.items():
            print(f"{n} pictures in {os.path.join(args.out, into)}")


def csv(args):
    os.makedirs(args.out, exist_ok=True)
    for part, prefix, limit in (("train", "train", args.limit), ("test", "t10k", args.test_limit)):
        images, height, width = split(args.data_dir, prefix, limit)
        path = os.path.join(args.out, f"{part}.csv")
        with open(path, "w") as f:
            f.write("label," + ",".join(f"pixel{p}" for p in range(height * width)) + "\n")
            for pixels, label in images:
                f.write(f"{label}," + ",".join(map(str, pixels)) + "\n")
        print(f"{len(images)} rows in {path}")


def coloured(args):
    rng = random.Random(args.seed)
    size = args.size
    for part, prefix, limit in (("train", "train", args.limit), ("test", "t10k", args.test_limit)):
        images, height, width = split(args.data_dir, prefix, limit)
        top, left = (size - height) // 2, (size - width) // 2
        for i, (pixels, label) in enumerate(images):
            fg = [rng.randrange(128, 256) for _ in range(3)]
            bg = [rng.randrange(0, 128) for _ in range(3)]
            rows = []
            for y in range(size):
                row = bytearray()
                for x in range(size):
                    sy, sx = y - top, x - left
                    ink = pixels[sy * width + sx] / 255 if 0 <= sy < height and 0 <= sx < width else 0
                    row += bytes(round(b + (f - b) * ink) for f, b in zip(fg, bg))
                rows.append(row)
            write(os.path.join(args.out, part, str(label), f"{i:05d}.png"), png(size, size, rows, True))
        print(f"{len(images)} coloured pictures in {os.path.join(args.out, part)}")


def idx(args):
    source = getattr(args, "from")
    classes = sorted(d for d in os.listdir(os.path.join(source, "train")) if not d.startswith("."))
    os.makedirs(args.out, exist_ok=True)
    for part, prefix in (("train", "train"), ("test", "t10k")):
        images, labels, shape = [], [], None
        for label, name in enumerate(classes):
            folder_path = os.path.join(source, part, name)
            for file in sorted(os.listdir(folder_path)) if os.path.isdir(folder_path) else []:
                width, height, channels, pixels = read_png(os.path.join(folder_path, file))
                if channels != 1 or shape not in (None, (height, width)):
                    sys.exit(f"make_datasets: error: {file}: gray pictures of one size only")
                shape = (height, width)
                images.append(pixels)
                labels.append(label)
        height, width = shape
        with open(os.path.join(args.out, f"{prefix}-images-idx3-ubyte"), "wb") as f:
            f.write(struct.pack(">IIII", 0x803, len(images), height, width) + b"".join(images))
        with open(os.path.join(args.out, f"{prefix}-labels-idx1-ubyte"), "wb") as f:
            f.write(struct.pack(">II", 0x801, len(labels)) + bytes(labels))
        print(f"{len(images)} images of {len(classes)} classes in {args.out} ({prefix})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("folder", "csv", "coloured"):
        p = sub.add_parser(name)
        p.add_argument("--data-dir", default=default_out_dir())
        p.add_argument("--out", required=True)
        p.add_argument("--limit", type=int, default=0)
        p.add_argument("--test-limit", type=int, default=0)
        if name == "folder":
            p.add_argument("--names", choices=["numbers", "fashion"], default="numbers")
            p.add_argument("--valid-last", type=int, default=0)
        if name == "coloured":
            p.add_argument("--size", type=int, default=32)
            p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("idx")
    p.add_argument("--from", required=True)
    p.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.command == "coloured" and args.size < 28:
        sys.exit("make_datasets: error: --size must be at least 28")
    {"folder": folder, "csv": csv, "coloured": coloured, "idx": idx}[args.command](args)


if __name__ == "__main__":
    main()
