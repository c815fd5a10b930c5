"""Möbius augmentation: the closed-form maps, the sampler's guards, the grid convention and the module."""

import math

import pytest
import torch
import torch.nn.functional as F

from task2vec.errors import FinetuneError
from task2vec.finetune.mobius import (
    MAX_STRENGTH,
    POLE_MARGIN,
    RandomMobius,
    mobius_apply,
    mobius_from_points,
    mobius_grid,
    mobius_inverse,
    sample_mobius,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_points(shape, seed: int) -> torch.Tensor:
    g = gen(seed)
    re, im = torch.randn((2, *shape), generator=g, dtype=torch.float64)
    return torch.complex(re, im)


def images(n: int = 4, c: int = 3, h: int = 24, w: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=gen(seed))


def square_distance(z: torch.Tensor) -> torch.Tensor:
    return torch.hypot((z.real.abs() - 1).clamp_min(0), (z.imag.abs() - 1).clamp_min(0))


def test_from_points_sends_src_to_dst():
    src, dst = random_points((5, 40, 3), 1), random_points((5, 40, 3), 2)
    m = mobius_from_points(src, dst)
    assert m.shape == (5, 40, 2, 2) and m.dtype == torch.complex128
    got = mobius_apply(m[..., None, :, :], src)
    assert torch.allclose(got, dst, atol=1e-5, rtol=0)
    det = m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
    assert torch.allclose(det, torch.ones_like(det), atol=1e-9)
    # complex64 in, complex64 out, still accurate for well-separated points
    src32 = torch.polar(torch.ones(64, 3), torch.rand(64, 1, generator=gen(3)) * 6 + torch.arange(3) * 2.1)
    dst32 = src32 + 0.2 * torch.complex(torch.rand(64, 3, generator=gen(4)), torch.rand(64, 3, generator=gen(5)))
    m32 = mobius_from_points(src32, dst32)
    assert m32.dtype == torch.complex64
    assert torch.allclose(mobius_apply(m32[:, None], src32), dst32, atol=1e-5, rtol=0)


def test_from_points_identity_when_src_equals_dst():
    src = random_points((100, 3), 7)
    m = mobius_from_points(src, src)
    eye = torch.eye(2, dtype=m.dtype).expand_as(m)
    sign = torch.where(m[:, :1, :1].real >= 0, 1.0, -1.0).to(m.dtype)  # the map fixes the matrix up to ±
    assert torch.allclose(m * sign, eye, atol=1e-9)


def test_from_points_rejects_coincident_points():
    src = torch.tensor([[0, 1, 1j]], dtype=torch.complex64)
    with pytest.raises(FinetuneError, match="distinct"):
        mobius_from_points(src, torch.tensor([[0, 0.5, 0.5]], dtype=torch.complex64))
    with pytest.raises(FinetuneError, match="shape"):
        mobius_from_points(torch.zeros(4, 2, dtype=torch.complex64), torch.zeros(4, 2, dtype=torch.complex64))


def test_inverse_and_composition():
    m = sample_mobius(50, 0.6, generator=gen(11)).to(torch.complex128)
    g = torch.linspace(-1, 1, 9, dtype=torch.float64)
    z = torch.complex(g[:, None].expand(9, 9), g[None, :].expand(9, 9)).reshape(-1)
    w = mobius_apply(m[:, None], z)
    back = mobius_apply(mobius_inverse(m)[:, None], w)
    assert torch.allclose(back, z.expand_as(back), atol=1e-9)
    # the matrix product is the composition of maps
    m2 = sample_mobius(50, 0.6, generator=gen(12)).to(torch.complex128)
    assert torch.allclose(mobius_apply((m @ m2)[:, None], z), mobius_apply(m[:, None], mobius_apply(m2[:, None], z)), atol=1e-9)
    assert not torch.allclose(w, z.expand_as(w), atol=1e-2)  # the maps are not the identity


@pytest.mark.parametrize("h, w", [(16, 16), (7, 12), (12, 5), (1, 3)])
def test_identity_grid_equals_affine_grid(h, w):
    eye = torch.eye(2, dtype=torch.complex64).expand(3, 2, 2)
    grid = mobius_grid(eye, h, w)
    ref = F.affine_grid(torch.eye(2, 3).expand(3, 2, 3), [3, 1, h, w], align_corners=False)
    assert grid.shape == ref.shape == (3, h, w, 2) and grid.dtype == torch.float32
    assert (grid - ref).abs().max().item() < 1e-6


@pytest.mark.parametrize("h, w", [(8, 16), (16, 8), (10, 10)])
def test_grid_is_backward_map_in_square_pixel_plane(h, w):
    """Forward translation by t moves the content by t * max(H, W) / 2 pixels along both axes (pixels are square in the plane)."""
    px = 2 / max(h, w)  # one pixel in plane units
    t = complex(2 * px, 3 * px)  # 2 px right, 3 px down
    m = torch.tensor([[[1, t], [0, 1]]], dtype=torch.complex64)
    x = torch.zeros(1, 1, h, w)
    x[0, 0, 2, 3] = 1.0
    y = RandomMobius(p=1.0, padding_mode="zeros").warp(x, m)
    r, c = divmod(int(y.flatten().argmax()), w)
    assert (r, c) == (5, 5) and y.max() > 0.999
    # the grid holds f^-1 of each output pixel centre: applying f to it gives the affine_grid centres back
    m = sample_mobius(4, 0.5, generator=gen(5))
    grid = mobius_grid(m, h, w).double()
    side = max(h, w)
    sx, sy = w / side, h / side
    z = torch.complex(grid[..., 0] * sx, grid[..., 1] * sy)
    fw = mobius_apply(m.to(torch.complex128)[:, None, None], z)
    ref = F.affine_grid(torch.eye(2, 3, dtype=torch.float64).expand(4, 2, 3), [4, 1, h, w], align_corners=False)
    assert torch.allclose(torch.stack([fw.real / sx, fw.imag / sy], -1), ref, atol=1e-4)


def test_strength_zero_is_near_exact_and_p_zero_is_bit_identical():
    x = images(4, 3, 20, 28)
    y = RandomMobius(p=1.0, strength=0.0)(x, generator=gen(0))
    assert y.shape == x.shape and (y - x).abs().max().item() < 1e-5
    y = RandomMobius(p=1.0, strength=0.0, interpolation="nearest")(x, generator=gen(0))
    assert torch.equal(y, x)
    y = RandomMobius(p=0.0, strength=0.9)(x, generator=gen(0))
    assert torch.equal(y, x)
    y = RandomMobius(p=1.0, strength=0.25)(x, generator=gen(0))
    assert (y - x).abs().max().item() > 0.1  # and a real strength does change every image
    assert ((y - x).abs().amax((1, 2, 3)) > 0.1).all()


def test_no_degenerate_maps_at_max_strength():
    strength = math.nextafter(MAX_STRENGTH, 0)
    m = sample_mobius(2000, strength, generator=gen(21))
    assert m.shape == (2000, 2, 2) and m.dtype == torch.complex64 and torch.isfinite(torch.view_as_real(m)).all()
    a, c, d = (m.to(torch.complex128)[:, i, j] for i, j in ((0, 0), (1, 0), (1, 1)))
    det = (m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]).to(torch.complex128)
    assert torch.allclose(det, torch.ones_like(det), atol=1e-4)
    affine = c.abs() < 1e-12
    for pole in (-d / c, a / c):  # both poles clear of the image square
        assert (affine | (square_distance(pole) > POLE_MARGIN * 0.999)).all()
    grid = mobius_grid(m, 16, 16)
    assert torch.isfinite(grid).all()
    inside = (grid.abs() <= 1.5).all(-1).float()
    assert inside.mean().item() > 0.9
    assert (inside.mean((1, 2)) > 0.2).all()  # no map throws an image entirely away
    # the sampler really does hit its guards at this strength: plain draws would often be rejected
    g = gen(22)
    src = torch.polar(torch.ones(2000, 3, dtype=torch.float64), torch.rand(2000, 1, generator=g, dtype=torch.float64) * 7
                      + torch.arange(3) * (2 * math.pi / 3))
    disp = torch.polar(torch.rand(2000, 3, generator=g, dtype=torch.float64).sqrt() * strength,
                       torch.rand(2000, 3, generator=g, dtype=torch.float64) * 2 * math.pi)
    raw = mobius_from_points(src, src + disp)
    raw_pole = mobius_inverse(raw)[:, 1, 1] / raw[:, 1, 0]  # a / c, the inverse map's pole
    assert (square_distance(raw_pole) <= POLE_MARGIN).float().mean() > 0.05


def test_sampler_is_deterministic_and_device_argument():
    a = sample_mobius(32, 0.4, generator=gen(3))
    b = sample_mobius(32, 0.4, generator=gen(3), device="cpu")
    assert torch.equal(a, b) and not torch.equal(a, sample_mobius(32, 0.4, generator=gen(4)))
    assert sample_mobius(0, 0.4).shape == (0, 2, 2)
    assert torch.equal(sample_mobius(3, 0.0), torch.eye(2, dtype=torch.complex64).expand(3, 2, 2))


def test_uint8_single_image_and_determinism():
    x = (images(6, 3, 24, 32) * 255).round().to(torch.uint8)
    aug = RandomMobius(p=1.0, strength=0.3)
    y = aug(x, generator=gen(9))
    assert y.dtype == torch.uint8 and y.shape == x.shape and not torch.equal(y, x)
    yf = aug(x.float(), generator=gen(9))
    assert torch.equal(yf.round().clamp(0, 255).to(torch.uint8), y)  # same maps, rounded (not truncated)
    assert torch.equal(aug(x, generator=gen(9)), y)
    assert not torch.equal(aug(x, generator=gen(10)), y)
    # the single-image path is the batch-of-one path
    one = aug(x[0], generator=gen(2))
    assert one.shape == x[0].shape and one.dtype == torch.uint8
    assert torch.equal(one, aug(x[:1], generator=gen(2))[0])
    # a 1-channel float image with nearest interpolation
    g = RandomMobius(p=1.0, strength=0.5, padding_mode="zeros", interpolation="nearest")(x[0, :1].float(), generator=gen(1))
    assert g.shape == (1, 24, 32) and set(g.unique().tolist()) <= set(x[0, :1].float().unique().tolist()) | {0.0}


def test_half_of_batch_transformed_others_bit_identical():
    x = images(16, 3, 16, 16, seed=4)
    aug = RandomMobius(p=0.5, strength=0.3, padding_mode="border")
    y = aug(x, generator=gen(123))
    same = torch.tensor([torch.equal(y[i], x[i]) for i in range(16)])
    changed = ((y - x).abs().amax((1, 2, 3)) > 0.05)
    assert bool((same ^ changed).all())  # every image is either untouched, bit for bit, or clearly warped
    assert 4 <= int(changed.sum()) <= 12
    counts = [int((RandomMobius(p=0.5)(x, generator=gen(s)) != x).flatten(1).any(1).sum()) for s in range(20)]
    assert 6.5 <= sum(counts) / len(counts) <= 9.5
    assert all(int((RandomMobius(p=1.0)(x, generator=gen(s)) != x).flatten(1).any(1).sum()) == 16 for s in range(3))


def test_default_generator_is_used_when_none_given():
    x = images(3)
    torch.manual_seed(5)
    a = RandomMobius(p=1.0)(x)
    torch.manual_seed(5)
    assert torch.equal(RandomMobius(p=1.0)(x), a) and not torch.equal(a, x)


@pytest.mark.parametrize("kwargs", [
    {"p": -0.1}, {"p": 1.5}, {"p": "0.5"}, {"p": True}, {"strength": -0.01}, {"strength": 1.0}, {"strength": float("nan")},
    {"padding_mode": "circular"}, {"interpolation": "bicubic"},
])
def test_bad_arguments(kwargs):
    with pytest.raises(FinetuneError) as e:
        RandomMobius(**kwargs)
    assert "\n" not in str(e.value) and next(iter(kwargs)) in str(e.value)


@pytest.mark.parametrize("x", [torch.zeros(8, 8), torch.zeros(1, 1, 3, 8, 8), torch.zeros(3, 8, 8, dtype=torch.int32), [[0.0]]])
def test_bad_inputs(x):
    with pytest.raises(FinetuneError):
        RandomMobius(p=1.0)(x)


def test_bad_function_arguments():
    with pytest.raises(FinetuneError):
        sample_mobius(-1, 0.2)
    with pytest.raises(FinetuneError):
        sample_mobius(3, 1.2)
    with pytest.raises(FinetuneError):
        mobius_grid(torch.eye(2, dtype=torch.complex64), 8, 8)
    with pytest.raises(FinetuneError):
        mobius_grid(torch.eye(2, dtype=torch.complex64)[None], 0, 8)


def test_repr_shows_parameters():
    r = repr(RandomMobius(p=0.3, strength=0.2, padding_mode="zeros", interpolation="nearest"))
    assert r == "RandomMobius(p=0.3, strength=0.2, padding_mode='zeros', interpolation='nearest')"


@pytest.mark.cuda
def test_cuda_batch_stays_on_gpu_and_matches_cpu():
    x = images(8, 3, 32, 32)
    aug = RandomMobius(p=0.5, strength=0.3)
    y = aug(x.cuda(), generator=gen(1))
    assert y.device.type == "cuda"
    assert (y.cpu() - aug(x, generator=gen(1))).abs().max().item() < 1e-3
    yg = aug(x.cuda(), generator=torch.Generator("cuda").manual_seed(1))
    assert yg.device.type == "cuda" and yg.shape == x.shape
