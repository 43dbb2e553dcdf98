"""MNIST aux-logit experiment: batched == one-by-one, data loaders, the same/cross-init gap."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from traitlab.core.errors import TraitlabError
from traitlab.mnist.batched import (
    BatchedMLP,
    DistillTarget,
    Streams,
    distill,
    model_seeds,
    sample_noise,
    train_classifier,
)
from traitlab.mnist.config import PRESETS, MnistConfig, load_mnist_config, preset_dict
from traitlab.mnist.data import DataConfig, load_dataset, read_idx, write_idx
from traitlab.mnist.experiment import run_experiment, summarize

ROOT = Path(__file__).resolve().parents[1]
SIZES = [16, 24, 24, 13]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Small models run best on one thread (and do not fight other jobs for the cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _close(a: torch.nn.Module, b: torch.nn.Module, atol: float = 1e-5) -> None:
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=atol, rtol=1e-4), na


# ---------------------------------------------------------------------------- batched


def test_forward_matches_modules() -> None:
    m = BatchedMLP.init(SIZES, [1, 2, 3], "torch_default")
    x = torch.randn(5, 16)
    out_shared = m(x)
    out_per = m(x.expand(3, -1, -1).contiguous())
    for k in range(3):
        ref = m.to_module(k)(x)
        assert torch.allclose(out_shared[k], ref, atol=1e-6)
        assert torch.allclose(out_per[k], ref, atol=1e-6)
    back = BatchedMLP.from_modules([m.to_module(k) for k in range(3)])
    assert all(torch.equal(a, b) for a, b in zip(back.parameters(), m.parameters(), strict=True))


def test_init_is_per_model_and_fan_in_scaled() -> None:
    seeds = model_seeds(0, "init", 4)
    big = BatchedMLP.init([64, 256, 13], seeds)
    one = BatchedMLP.init([64, 256, 13], seeds[2:3])
    assert torch.equal(big.weights[0][2], one.weights[0][0])  # model k is independent of M
    assert abs(float(big.weights[0].std()) - 1 / 8) < 0.01  # N(0, 1/d_in), d_in = 64
    assert float(big.biases[0].abs().max()) == 0.0


def test_batched_teacher_training_equals_one_by_one() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(50, 16), torch.randint(0, 10, (50,))
    init = BatchedMLP.init(SIZES, model_seeds(0, "init", 3))
    data_seeds = model_seeds(0, "data", 3)
    trained = train_classifier(init, x, y, Streams(data_seeds), epochs=2, lr=1e-2, batch_size=16)
    for k in range(3):  # plain nn.Sequential + torch Adam, same data order
        mod = init.to_module(k)
        opt = torch.optim.Adam(mod.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(data_seeds[k])
        for _ in range(2):
            perm = torch.randperm(50, generator=g)
            for s in range(0, 50, 16):
                idx = perm[s : s + 16]
                loss = F.cross_entropy(mod(x[idx])[:, :10], y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        _close(mod, trained.to_module(k))


def test_batched_distillation_equals_one_by_one() -> None:
    teacher = BatchedMLP.init(SIZES, [11, 12], "torch_default")
    same = BatchedMLP.init(SIZES, [21, 22])
    cross = BatchedMLP.init(SIZES, [31, 32])
    noise_seeds = [41, 42]
    aux = slice(10, 13)
    groups = [
        DistillTarget("student", same, aux),
        DistillTarget("cross", cross, aux),
        DistillTarget("all", same, slice(None)),
    ]
    out = distill(
        teacher,
        groups,
        Streams(noise_seeds),
        noise="uniform",
        n_noise=40,
        epochs=2,
        lr=1e-2,
        batch_size=16,
        loss="kl",
    )
    for k in range(2):
        t = teacher.to_module(k)
        for g in groups:
            mod = g.init.to_module(k)
            opt = torch.optim.Adam(mod.parameters(), lr=1e-2)
            gen = torch.Generator().manual_seed(noise_seeds[k])
            for _ in range(2):
                for s in range(0, 40, 16):
                    xb = sample_noise("uniform", min(16, 40 - s), 16, gen)
                    with torch.no_grad():
                        tgt = t(xb)[:, g.columns]
                    lp = F.log_softmax(mod(xb)[:, g.columns], -1)
                    loss = F.kl_div(
                        lp, F.log_softmax(tgt, -1), log_target=True, reduction="batchmean"
                    )
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            _close(mod, out[g.name].to_module(k))


@pytest.mark.parametrize(
    "kind", ["uniform", "uniform01", "normal", "rademacher", "shuffled_pixels"]
)
def test_noise_kinds(kind: str) -> None:
    pool = torch.rand(20, 64) * 2 - 1
    x = sample_noise(kind, 32, 64, torch.Generator().manual_seed(0), pool)
    assert x.shape == (32, 64) and torch.isfinite(x).all()
    if kind == "shuffled_pixels":  # each row is a permutation of some training image
        assert any(torch.equal(x[0].sort().values, p.sort().values) for p in pool)


# ---------------------------------------------------------------------------- data


def _fake_mnist(n: int, side: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, side, side), dtype=np.uint8), rng.integers(
        0, 10, n, dtype=np.uint8
    )


def _write_mnist_dir(d: Path, gz: bool = True, dot_names: bool = False) -> None:
    xtr, ytr = _fake_mnist(60)
    xte, yte = _fake_mnist(20, seed=1)
    sep = "." if dot_names else "-"
    ext = ".gz" if gz else ""
    write_idx(d / f"train-images{sep}idx3-ubyte{ext}", xtr)
    write_idx(d / f"train-labels{sep}idx1-ubyte{ext}", ytr)
    write_idx(d / f"t10k-images{sep}idx3-ubyte{ext}", xte)
    write_idx(d / f"t10k-labels{sep}idx1-ubyte{ext}", yte)


@pytest.mark.parametrize("gz,dot_names", [(True, False), (False, True)])
def test_idx_directory_loads(tmp_path: Path, gz: bool, dot_names: bool) -> None:
    _write_mnist_dir(tmp_path, gz, dot_names)
    data = load_dataset(DataConfig(path=str(tmp_path)))
    assert data.x_train.shape == (60, 784) and data.x_test.shape == (20, 784)
    assert data.image_shape == (28, 28) and data.y_train.dtype == torch.int64
    assert -1.0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1.0
    xtr, ytr = _fake_mnist(60)
    assert torch.allclose(
        data.x_train[0], torch.tensor(xtr[0].reshape(-1) / 255.0 * 2 - 1).float(), atol=1e-6
    )
    assert data.y_train.tolist() == ytr.tolist()
    # one of the four files also works: its siblings are used
    one = next(tmp_path.glob("train-images*"))
    assert load_dataset(DataConfig(path=str(one), scale="unit")).x_train.max() <= 1.0


def test_idx_roundtrip_dtypes(tmp_path: Path) -> None:
    for arr in (
        np.arange(12, dtype=np.uint8).reshape(3, 4),
        np.linspace(0, 1, 6).astype(np.float32),
        np.arange(-3, 3, dtype=np.int32),
    ):
        write_idx(tmp_path / "a.idx", arr)
        assert np.array_equal(read_idx(tmp_path / "a.idx"), arr)


def _idx_bytes(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


@pytest.mark.parametrize(
    "blob,message",
    [
        (b"\x01\x02\x08\x03" + b"\x00" * 20, "not an IDX file"),
        (b"\x00\x00", "too short"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown IDX element type"),
        (_idx_bytes(np.zeros((4, 3, 3)))[:-5], "truncated"),
        (_idx_bytes(np.zeros((4, 3, 3))) + b"xx", "trailing bytes"),
        (gzip.compress(_idx_bytes(np.zeros((4, 3, 3))), mtime=0)[:-10], "gzip"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
    ],
    # Named by the message: ids made of the bytes differ between pytest-xdist workers.
    ids=["magic", "short", "type", "truncated", "trailing", "gzip", "header"],
)
def test_malformed_idx_is_one_line_error(tmp_path: Path, blob: bytes, message: str) -> None:
    p = tmp_path / "bad-idx3-ubyte"
    p.write_bytes(blob)
    with pytest.raises(TraitlabError, match=message) as e:
        read_idx(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_idx_directory_problems(tmp_path: Path) -> None:
    _write_mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(TraitlabError, match="missing MNIST IDX file.*t10k-labels"):
        load_dataset(DataConfig(path=str(tmp_path)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(19, dtype=np.uint8))
    with pytest.raises(TraitlabError, match="19 labels for 20 images"):
        load_dataset(DataConfig(path=str(tmp_path)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(20, 12, dtype=np.uint8))
    with pytest.raises(TraitlabError, match="labels must be in 0..9"):
        load_dataset(DataConfig(path=str(tmp_path)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros((20, 2), dtype=np.uint8))
    with pytest.raises(TraitlabError, match="1-D"):
        load_dataset(DataConfig(path=str(tmp_path)))
    with pytest.raises(TraitlabError, match="no such file"):
        load_dataset(DataConfig(path=str(tmp_path / "nope")))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(TraitlabError, match="expected an .npz"):
        load_dataset(DataConfig(path=str(tmp_path / "notes.txt")))


def test_npz_good_and_bad(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    good = {
        "x_train": rng.random((30, 8, 8)).astype(np.float32),
        "y_train": rng.integers(0, 10, 30),
        "x_test": rng.random((10, 64)).astype(np.float32),
        "y_test": rng.integers(0, 10, 10),
    }
    np.savez(tmp_path / "good.npz", **good)
    data = load_dataset(DataConfig(path=str(tmp_path / "good.npz")))
    assert data.x_train.shape == (30, 64) and data.x_test.shape == (10, 64)
    cases = {
        "missing": ({k: v for k, v in good.items() if k != "y_test"}, "lacks y_test"),
        "range": ({**good, "x_train": good["x_train"] * 1000}, "max"),
        "nan": ({**good, "x_test": np.full((10, 64), np.nan, np.float32)}, "NaN"),
        "dims": ({**good, "x_test": rng.random((10, 49)).astype(np.float32)}, "must match"),
        "shape": ({**good, "x_train": rng.random((30, 2, 4, 8)).astype(np.float32)}, "shape"),
        "labels": ({**good, "y_train": np.full(30, 2.5)}, "whole numbers"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(TraitlabError, match=message):
            load_dataset(DataConfig(path=str(tmp_path / f"{name}.npz")))
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(TraitlabError, match="not a readable .npz"):
        load_dataset(DataConfig(path=str(tmp_path / "corrupt.npz")))


def test_embedded_digits() -> None:
    d = load_dataset(DataConfig())
    assert d.x_train.shape == (1347, 64) and d.x_test.shape == (450, 64)
    assert float(d.x_train.min()) == -1.0 and float(d.x_train.max()) == 1.0
    assert sorted(set(d.y_test.tolist())) == list(range(10))
    up = load_dataset(DataConfig(digits_size=28, max_train=100, max_test=50))
    assert up.x_train.shape == (100, 784) and up.image_shape == (28, 28)
    assert d.fingerprint() == load_dataset(DataConfig()).fingerprint()


# ---------------------------------------------------------------------------- config


def test_config_files_match_presets() -> None:
    for name in PRESETS:
        from_file = load_mnist_config(ROOT / "configs" / "mnist" / f"{name}.yaml")
        assert from_file.model_dump() == MnistConfig.model_validate(preset_dict(name)).model_dump()


def test_config_errors_are_one_line() -> None:
    with pytest.raises(TraitlabError, match="unknown field 'model.bogus'"):
        load_mnist_config(None, ["model.bogus=1"])
    with pytest.raises(TraitlabError, match="identically zero"):
        load_mnist_config(None, ["model.n_aux=1"])
    assert (
        load_mnist_config(None, ["model.n_aux=1", "student.loss=mse", "sweep.m=[1,2]"]).model.n_aux
        == 1
    )
    with pytest.raises(TraitlabError, match="unknown MNIST preset"):
        load_mnist_config(None, preset="nope")


# ---------------------------------------------------------------------------- the effect


def test_same_init_student_learns_digits_cross_init_does_not() -> None:
    """A small, fast version of the experiment: the same-init vs cross-init gap shows."""
    cfg = MnistConfig(
        n_models=8,
        seed=0,
        teacher={"epochs": 5},
        student={"n_noise": 6400, "batch_size": 64, "lr": 2e-3},
        model={"n_aux": 10},
        controls=["cross_init"],
    )
    data = load_dataset(cfg.data)
    res = run_experiment(cfg, data)
    s = summarize(res, 0.95)
    c = s["conditions"]
    assert c["teacher"]["mean"] > 0.9
    assert c["student"]["mean"] > 0.35, c["student"]
    assert c["cross_init"]["mean"] < 0.2, c["cross_init"]
    assert s["same_minus_cross"]["n_positive"] == 8 and s["same_minus_cross"]["p_value"] < 1e-3
    again = run_experiment(cfg, data)  # deterministic given the seed
    assert again["accuracies"] == res["accuracies"]
