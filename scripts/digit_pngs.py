#!/usr/bin/env python3
"""Save MNIST test digits as PNG pictures, to try `trainer predict` on.

Usage: digit_pngs.py [--data-dir DIR] [--out DIR] [--scale N] [--invert] INDEX...

Each INDEX is a position in the t10k test set; the picture is written as
OUT/digit-INDEX-LABEL.png (the true label in the name), scaled up N times
(default 4, so 112x112) and, with --invert, drawn dark on light like ink on
paper. Nothing but Python's standard library is needed.
"""
import argparse
import gzip
import os
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fetch_mnist import default_out_dir  # noqa: E402  (one place for the data-dir rule)


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    (magic,) = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return shape, data[4 + 4 * dims :]


def find(data_dir, name):
    for candidate in (name + ".gz", name):
        path = os.path.join(data_dir, candidate)
        if os.path.exists(path):
            return path
    sys.exit(f"error: {os.path.join(data_dir, name)}(.gz) not found; run scripts/fetch_mnist.py")


def write_png(path, width, height, rows):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + bytes(row) for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_out_dir())
    parser.add_argument("--out", default=".")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--invert", action="store_true")
    parser.add_argument("index", type=int, nargs="+")
    args = parser.parse_args()

    (count, height, width), pixels = read_idx(find(args.data_dir, "t10k-images-idx3-ubyte"))
    _, labels = read_idx(find(args.data_dir, "t10k-labels-idx1-ubyte"))
    os.makedirs(args.out, exist_ok=True)
    for index in args.index:
        if not 0 <= index < count:
            sys.exit(f"error: index {index} is outside the test set (0-{count - 1})")
        image = pixels[index * height * width : (index + 1) * height * width]
        rows = []
        for y in range(height):
            row = image[y * width : (y + 1) * width]
            if args.invert:
                row = bytes(255 - p for p in row)
            row = bytes(p for p in row for _ in range(args.scale))
            rows.extend([row] * args.scale)
        name = f"digit-{index}-{labels[index]}{'-inverted' if args.invert else ''}.png"
        path = os.path.join(args.out, name)
        write_png(path, width * args.scale, height * args.scale, rows)
        print(path)


if __name__ == "__main__":
    main()
