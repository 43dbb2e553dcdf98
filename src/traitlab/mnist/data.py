"""Digits for the auxiliary-logit experiment: embedded load_digits, MNIST IDX files, or .npz.

Nothing is downloaded. Every loader validates what it reads and raises a one-line
`TraitlabError` naming the file and the problem (bad magic, truncated data, wrong shapes,
labels outside 0-9, pixel values outside the expected range).

Pixels are first mapped to [0, 1] (uint8 / 255; load_digits / 16; float data must already be
in [0, 1] or in [0, 255]), then to the model's input range (`DataConfig.scale`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from traitlab.core.errors import TraitlabError
from traitlab.mnist.config import DataConfig

# IDX element types: code -> (numpy big-endian dtype, name)
_IDX_TYPES: dict[int, tuple[str, str]] = {
    0x08: (">u1", "unsigned byte"),
    0x09: (">i1", "signed byte"),
    0x0B: (">i2", "short"),
    0x0C: (">i4", "int"),
    0x0D: (">f4", "float"),
    0x0E: (">f8", "double"),
}

# The four standard MNIST files (also Fashion-MNIST, KMNIST): canonical name -> role.
_IDX_NAMES = {
    "train-images-idx3-ubyte": "x_train",
    "train-labels-idx1-ubyte": "y_train",
    "t10k-images-idx3-ubyte": "x_test",
    "t10k-labels-idx1-ubyte": "y_test",
}


@dataclass(frozen=True)
class Digits:
    """A train/test split of flattened images in the model's input range, labels 0-9."""

    x_train: torch.Tensor  # (N, D) float32
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor  # (N_test, D) float32
    y_test: torch.Tensor  # (N_test,) int64
    image_shape: tuple[int, int]
    source: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def d_in(self) -> int:
        return int(self.x_train.shape[1])

    def fingerprint(self) -> str:
        """Content hash of the arrays (keys the stage cache)."""
        h = hashlib.sha256()
        for t in (self.x_train, self.y_train, self.x_test, self.y_test):
            a = t.detach().cpu().contiguous().numpy()
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n_train": int(self.x_train.shape[0]),
            "n_test": int(self.x_test.shape[0]),
            "image_shape": list(self.image_shape),
            "d_in": self.d_in,
            "fingerprint": self.fingerprint(),
            **self.info,
        }


# ---------------------------------------------------------------------------- IDX


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TraitlabError(f"{path}: file not found") from None
    except OSError as e:
        raise TraitlabError(f"{path}: cannot read ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise TraitlabError(f"{path}: corrupt or truncated gzip data ({e})") from None
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a native-endian numpy array, validated."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise TraitlabError(f"{path}: too short for an IDX file ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise TraitlabError(
            f"{path}: not an IDX file (magic bytes {raw[:4].hex()}; expected 0000 <type> <ndim>)"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise TraitlabError(f"{path}: unknown IDX element type 0x{code:02x}")
    if ndim < 1:
        raise TraitlabError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise TraitlabError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_TYPES[code][0])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise TraitlabError(
            f"{path}: IDX data {what}: header says {'x'.join(map(str, dims))} "
            f"{_IDX_TYPES[code][1]}s = {expected} bytes, file holds {found}"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write an IDX file (gzipped when `compress`, default: the name ends in .gz)."""
    path = Path(path)
    arr = np.asarray(array)
    codes = {np.dtype(v[0]).newbyteorder("="): k for k, v in _IDX_TYPES.items()}
    native = arr.dtype.newbyteorder("=")
    if native not in codes:
        raise TraitlabError(f"write_idx: unsupported dtype {arr.dtype}")
    code = codes[native]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    blob = head + arr.astype(np.dtype(_IDX_TYPES[code][0])).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        blob = gzip.compress(blob, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _canonical(name: str) -> str:
    n = name.lower()
    if n.endswith(".gz"):
        n = n[:-3]
    return n.replace(".", "-").replace("_", "-")


def find_idx_files(directory: Path) -> dict[str, Path]:
    """The four standard files in a directory (names as distributed, '.' or '-' before idx)."""
    found: dict[str, Path] = {}
    for p in sorted(directory.iterdir()):
        role = _IDX_NAMES.get(_canonical(p.name))
        if role and p.is_file() and role not in found:
            found[role] = p
    missing = [n for n, r in _IDX_NAMES.items() if r not in found]
    if missing:
        raise TraitlabError(
            f"{directory}: missing MNIST IDX file(s) {', '.join(missing)} (optionally .gz); "
            "pass a directory with the four standard files or an .npz"
        )
    return found


# ---------------------------------------------------------------------------- validation


def _images_to_unit(x: np.ndarray, where: str) -> np.ndarray:
    """Pixels to float32 in [0, 1]; integers are divided by 255, floats must be in [0,1] or [0,255]."""
    if x.size == 0:
        raise TraitlabError(f"{where}: no images")
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise TraitlabError(f"{where}: integer pixels must be in 0..255, found {lo}..{hi}")
        return (x.astype(np.float32) / 255.0).astype(np.float32)
    if not np.issubdtype(x.dtype, np.floating):
        raise TraitlabError(f"{where}: pixels must be numbers, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise TraitlabError(f"{where}: pixels contain NaN or infinity")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0:
        raise TraitlabError(
            f"{where}: float pixels must be in [0, 1] or [0, 255], found min {lo:g}"
        )
    if hi <= 1.0:
        return x.astype(np.float32)
    if hi <= 255.0:
        return (x / 255.0).astype(np.float32)
    raise TraitlabError(f"{where}: float pixels must be in [0, 1] or [0, 255], found max {hi:g}")


def _flatten_images(x: np.ndarray, where: str) -> tuple[np.ndarray, tuple[int, int]]:
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim == 3:
        shape = (int(x.shape[1]), int(x.shape[2]))
        return x.reshape(len(x), -1), shape
    if x.ndim == 2:
        d = int(x.shape[1])
        side = int(round(d**0.5))
        return x, (side, side) if side * side == d else (1, d)
    raise TraitlabError(
        f"{where}: images must have shape (N, H, W), (N, 1, H, W) or (N, D), got {x.shape}"
    )


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise TraitlabError(f"{where}: labels must be 1-D, got shape {y.shape}")
    if len(y) != n:
        raise TraitlabError(f"{where}: {len(y)} labels for {n} images; the counts must match")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise TraitlabError(f"{where}: labels must be whole numbers 0-9")
    elif not np.issubdtype(y.dtype, np.integer):
        raise TraitlabError(f"{where}: labels must be integers 0-9, got dtype {y.dtype}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise TraitlabError(f"{where}: labels must be in 0..9, found {y.min()}..{y.max()}")
    return y.astype(np.int64)


def _validated(
    arrays: dict[str, np.ndarray], where: dict[str, str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    xtr, shape = _flatten_images(arrays["x_train"], where["x_train"])
    xte, shape_te = _flatten_images(arrays["x_test"], where["x_test"])
    if xtr.shape[1] != xte.shape[1]:
        raise TraitlabError(
            f"{where['x_test']}: test images have {xte.shape[1]} pixels, train images "
            f"{xtr.shape[1]}; they must match"
        )
    xtr = _images_to_unit(xtr, where["x_train"])
    xte = _images_to_unit(xte, where["x_test"])
    ytr = _labels(arrays["y_train"], len(xtr), where["y_train"])
    yte = _labels(arrays["y_test"], len(xte), where["y_test"])
    return xtr, ytr, xte, yte, shape


# ---------------------------------------------------------------------------- loaders


def load_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            need = ["x_train", "y_train", "x_test", "y_test"]
            missing = [k for k in need if k not in keys]
            if missing:
                raise TraitlabError(
                    f"{path}: .npz lacks {', '.join(missing)} (has {', '.join(sorted(keys)) or 'nothing'}); "
                    "it needs x_train, y_train, x_test, y_test"
                )
            return {k: np.asarray(z[k]) for k in need}
    except TraitlabError:
        raise
    except FileNotFoundError:
        raise TraitlabError(f"{path}: file not found") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise TraitlabError(f"{path}: not a readable .npz ({e})") from None


def load_digits_file(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str], str]:
    """Raw arrays from an .npz, an IDX directory, or one IDX file (its siblings are used)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise TraitlabError(f"{p}: no such file or directory; pass MNIST IDX files or an .npz")
    if p.is_file() and p.suffix == ".npz":
        arrays = load_npz_arrays(p)
        return arrays, {k: f"{p}[{k}]" for k in arrays}, str(p)
    directory = p if p.is_dir() else p.parent
    if p.is_file() and _canonical(p.name) not in _IDX_NAMES:
        raise TraitlabError(
            f"{p}: expected an .npz, a directory of MNIST IDX files, or one of "
            f"{', '.join(_IDX_NAMES)} (optionally .gz)"
        )
    files = find_idx_files(directory)
    arrays = {role: read_idx(f) for role, f in files.items()}
    for role in ("x_train", "x_test"):
        if arrays[role].ndim != 3:
            raise TraitlabError(
                f"{files[role]}: images must be a 3-D IDX array (N, H, W), got {arrays[role].ndim}-D"
            )
    for role in ("y_train", "y_test"):
        if arrays[role].ndim != 1:
            raise TraitlabError(
                f"{files[role]}: labels must be a 1-D IDX array, got {arrays[role].ndim}-D"
            )
    return arrays, {k: str(v) for k, v in files.items()}, str(directory)


def _subsample(x: np.ndarray, y: np.ndarray, k: int | None, rng: np.random.Generator):
    if k is None or k >= len(x):
        return x, y
    idx = np.sort(rng.permutation(len(x))[:k])
    return x[idx], y[idx]


def _scale(x: np.ndarray, scale: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return t * 2 - 1 if scale == "pm1" else t


def load_embedded_digits(cfg: DataConfig) -> Digits:
    """scikit-learn's bundled 8x8 digits (1,797 images), stratified split, optionally 28x28."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    shape = (8, 8)
    if cfg.digits_size == 28:
        t = torch.from_numpy(x).view(-1, 1, 8, 8)
        t = torch.nn.functional.interpolate(t, size=(28, 28), mode="bilinear", align_corners=False)
        x = t.clamp(0, 1).reshape(len(x), -1).numpy()
        shape = (28, 28)
    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=cfg.test_fraction, stratify=y, random_state=cfg.split_seed
    )
    return _finish(
        xtr,
        ytr.astype(np.int64),
        xte,
        yte.astype(np.int64),
        shape,
        cfg,
        "sklearn.datasets.load_digits",
        {"upsampled": cfg.digits_size == 28},
    )


def _finish(
    xtr, ytr, xte, yte, shape, cfg: DataConfig, source: str, info: dict[str, Any]
) -> Digits:
    rng = np.random.default_rng(cfg.split_seed)
    xtr, ytr = _subsample(xtr, ytr, cfg.max_train, rng)
    xte, yte = _subsample(xte, yte, cfg.max_test, rng)
    return Digits(
        x_train=_scale(xtr, cfg.scale),
        y_train=torch.from_numpy(np.ascontiguousarray(ytr)),
        x_test=_scale(xte, cfg.scale),
        y_test=torch.from_numpy(np.ascontiguousarray(yte)),
        image_shape=shape,
        source=source,
        info={"scale": cfg.scale, **info},
    )


def load_dataset(cfg: DataConfig) -> Digits:
    """The digits the config names: `cfg.path` (IDX / .npz) or the embedded load_digits."""
    if cfg.path is None:
        return load_embedded_digits(cfg)
    arrays, where, source = load_digits_file(cfg.path)
    xtr, ytr, xte, yte, shape = _validated(arrays, where)
    return _finish(xtr, ytr, xte, yte, shape, cfg, source, {})
