"""Random Möbius-transform data augmentation (after Zhou et al., "Data augmentation with Möbius transformations", 2020).

A Möbius map of the image plane is f(z) = (a z + b) / (c z + d) with complex a, b, c, d and ad − bc ≠ 0,
stored as the 2×2 complex matrix [[a, b], [c, d]] (composition is matrix product, the inverse is the
adjugate [[d, −b], [−c, a]], and a matrix and its multiples are the same map). Unlike affine maps these
bend straight lines into circular arcs while preserving angles, so local shapes survive while the global
geometry changes: a cheap, label-preserving augmentation for image classification.

The image plane. A pixel's position is the complex number z = sx·x + i·sy·y, where (x, y) are
``grid_sample``'s normalised coordinates (x, y ∈ [−1, 1] from the left/top edge to the right/bottom edge
of the image, ``align_corners=False``: pixel centres at (2j + 1)/W − 1) and (sx, sy) = (W, H) / max(H, W).
So the longer side spans [−1, 1] and pixels are square in the plane; for square images z = x + i y.
The maps are therefore conformal in pixel space whatever the aspect ratio. (y points down, which only
mirrors the picture of the plane; nothing here depends on orientation conventions.)

Sampling (``sample_mobius``). Three control points lie on the circle of radius ``CONTROL_RADIUS`` (1, the
circle inscribed in the image's longer side) about the image centre, 120° apart, at a uniformly random
rotation (so the augmentation has no preferred direction). Each is moved by an independent
displacement drawn uniformly from the disc of radius ``strength``; the sampled map is the unique Möbius
map sending the three control points to the moved ones (``mobius_from_points``). ``strength = 0`` gives
the identity. A map is accepted only if it is well conditioned and both its pole −d/c and the pole a/c of
its inverse lie farther than ``POLE_MARGIN`` (0.5) from the square [−1, 1]² (which holds the image whatever
its aspect ratio), so the sampling grid is finite and smooth and no part of the image is sent to or pulled
from infinity. Rejected maps are redrawn (up to ``_RESAMPLE_ROUNDS`` times) and then, if still rejected,
have their displacements halved until accepted (the identity always is). Everything is drawn from the
given ``torch.Generator``, so a seed fixes the result.

Parameters of ``RandomMobius``:
    p             probability that each image is transformed (independently per image); the others are
                  returned bit-identical.
    strength      the largest displacement of each control point, in units of half the image's longer
                  side (the normalised-coordinate unit, also the control circle's radius): 0.25 moves each
                  control point by up to 1/8 of the image's longer side. Allowed: 0 ≤ strength < 1.
                  The warps grow with it (figures: benchmarks/README.md).
    padding_mode  what the transform shows where the map reaches outside the image: ``"reflection"``
                  (mirror the image at its edges, the default: no artificial borders for the network to
                  learn), ``"border"`` (repeat the edge pixels) or ``"zeros"`` (black).
    interpolation ``"bilinear"`` or ``"nearest"``.

The batched path samples one map per selected image and warps them all with one ``grid_sample`` call on
the batch's device (GPU batches stay on the GPU). A single C×H×W image (a DataLoader worker's per-image
path) goes through the same code as a batch of one. uint8 images are warped in float32 and rounded back.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from ..errors import FinetuneError

CONTROL_RADIUS = 1.0
"""Radius (normalised units) of the circle holding the three control points: the image's inscribed circle.

Control points this far out (rather than nearer the centre) make the map interpolate, not extrapolate, the
displacements over most of the image, which keeps the corners' distortion of the order of ``strength``
(with radius 0.7 and strength 0.25, 1% of the maps reached 2.9 half-sides out instead of 1.63)."""
POLE_MARGIN = 0.5
"""Smallest allowed distance from either pole of a sampled map to the square [-1, 1]^2."""
MAX_STRENGTH = 1.0
"""``strength`` must be below this: at 1 a control point may move to the image centre."""
_COND_MIN = 1e-6  # |det| / ||M||_F^2 below this counts as degenerate
_RESAMPLE_ROUNDS = 16
_SHRINK_ROUNDS = 40

PADDING_MODES = ("zeros", "border", "reflection")
INTERPOLATIONS = ("bilinear", "nearest")

__all__ = [
    "CONTROL_RADIUS", "POLE_MARGIN", "MAX_STRENGTH", "mobius_from_points", "mobius_apply", "mobius_inverse",
    "sample_mobius", "mobius_grid", "RandomMobius",
]


def _to_points(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[-1] != 3:
        raise FinetuneError(f"{name} must be a tensor of shape (..., 3) holding three points, got "
                            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not x.is_complex():
        x = x.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)
    return x


def _points_to_zero_one_inf(z: torch.Tensor) -> torch.Tensor:
    """Matrix of the Möbius map sending z[..., 0], z[..., 1], z[..., 2] to 0, 1, ∞ (the cross-ratio map).

    S(w) = (w − z1)(z2 − z3) / ((w − z3)(z2 − z1)), i.e. [[z2 − z3, −z1 (z2 − z3)], [z2 − z1, −z3 (z2 − z1)]].
    """
    z1, z2, z3 = z.unbind(-1)
    p, q = z2 - z3, z2 - z1
    return torch.stack([torch.stack([p, -z1 * p], -1), torch.stack([q, -z3 * q], -1)], -2)


def _adjugate(m: torch.Tensor) -> torch.Tensor:
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    return torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)


def _det(m: torch.Tensor) -> torch.Tensor:
    return m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]


def _normalise(m: torch.Tensor) -> torch.Tensor:
    """Scale each matrix to determinant 1 (the same map; keeps the entries of order 1 near the identity)."""
    return m / torch.sqrt(_det(m))[..., None, None]


def mobius_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Return the Möbius maps sending ``src[..., k]`` to ``dst[..., k]`` (k = 0, 1, 2) as (..., 2, 2) complex matrices.

    Closed form: with S_src, S_dst the maps sending each triple to (0, 1, ∞), the answer is S_dst⁻¹ ∘ S_src
    (a Möbius map is fixed by three point correspondences). The matrices are scaled to determinant 1.
    The three points of each triple must be distinct; real inputs are read as points on the real axis.
    Raises ``FinetuneError`` for shapes that do not broadcast to (..., 3) or for coincident points.
    """
    src, dst = _to_points(src, "src"), _to_points(dst, "dst")
    dtype = torch.promote_types(src.dtype, dst.dtype)
    src, dst = src.to(dtype), dst.to(dtype)
    try:
        src, dst = torch.broadcast_tensors(src, dst)
    except RuntimeError as e:
        raise FinetuneError(f"src {tuple(src.shape)} and dst {tuple(dst.shape)} do not broadcast") from e
    for name, z in (("src", src), ("dst", dst)):
        if bool(((z - z.roll(1, -1)) == 0).any()):
            raise FinetuneError(f"the three {name} points of a triple must be distinct")
    return _from_points(src, dst)


def _from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """``mobius_from_points`` without checks: coincident points give non-finite matrices."""
    return _normalise(_adjugate(_points_to_zero_one_inf(dst)) @ _points_to_zero_one_inf(src))


def mobius_apply(matrices: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Evaluate f(z) = (a z + b) / (c z + d); ``matrices`` (..., 2, 2) broadcasts against ``z`` (...)."""
    a, b, c, d = matrices[..., 0, 0], matrices[..., 0, 1], matrices[..., 1, 0], matrices[..., 1, 1]
    return (a * z + b) / (c * z + d)


def mobius_inverse(matrices: torch.Tensor) -> torch.Tensor:
    """The inverse maps: the adjugate [[d, −b], [−c, a]] (equal to the matrix inverse for determinant 1)."""
    return _adjugate(matrices)


def _square_distance(z: torch.Tensor) -> torch.Tensor:
    """Euclidean distance from each point to the square [-1, 1]^2 (0 inside); non-finite points are infinitely far."""
    dx = (z.real.abs() - 1).clamp_min(0)
    dy = (z.imag.abs() - 1).clamp_min(0)
    dist = torch.hypot(dx, dy)
    return torch.where(torch.isfinite(dist), dist, torch.full_like(dist, math.inf))


def _acceptable(m: torch.Tensor) -> torch.Tensor:
    """Boolean mask of well-conditioned maps whose two poles (−d/c and a/c) are clear of the image."""
    a, c, d = m[..., 0, 0], m[..., 1, 0], m[..., 1, 1]
    norm2 = (m.abs() ** 2).sum((-2, -1))
    ok = torch.isfinite(norm2) & (_det(m).abs() > _COND_MIN * norm2)
    far = c.abs() <= 1e-12 * norm2.sqrt()  # affine map: poles at infinity
    c_safe = torch.where(far, torch.ones_like(c), c)
    for pole in (-d / c_safe, a / c_safe):
        ok &= far | (_square_distance(pole) > POLE_MARGIN)
    return ok


def _disc(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """n × 3 complex128 points uniform in the unit disc."""
    u = torch.rand(n, 3, 2, generator=generator, device=device, dtype=torch.float64)
    return torch.polar(u[..., 0].sqrt(), 2 * math.pi * u[..., 1])


def sample_mobius(n: int, strength: float, *, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Draw ``n`` random near-identity Möbius maps as an (n, 2, 2) complex64 tensor on ``device``.

    Three control points on the circle of radius ``CONTROL_RADIUS`` (random rotation) each move by a random
    vector uniform in the disc of radius ``strength`` (normalised units); the map is the unique Möbius map
    doing that, redrawn or shrunk until both poles are clear of the image (see the module docstring).
    The random numbers come from ``generator`` (on its own device; the default generator when None) and the
    arithmetic is float64, so the same seed gives the same maps whatever ``device`` is. Matrices have
    determinant 1 and map source positions to output positions (``mobius_grid`` inverts them).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise FinetuneError(f"n must be a non-negative int, got {n!r}")
    strength = _check_strength(strength)
    device = torch.device(device) if device is not None else torch.device("cpu")
    work = generator.device if generator is not None else torch.device("cpu")
    ident = torch.eye(2, dtype=torch.complex128, device=work).expand(n, 2, 2)
    if n == 0 or strength == 0:
        return ident.to(device=device, dtype=torch.complex64).contiguous()
    theta = 2 * math.pi * torch.rand(n, 1, generator=generator, device=work, dtype=torch.float64)
    src = torch.polar(torch.full((n, 3), CONTROL_RADIUS, dtype=torch.float64, device=work),
                      theta + torch.arange(3, device=work, dtype=torch.float64) * (2 * math.pi / 3))
    disp = torch.zeros(n, 3, dtype=torch.complex128, device=work)
    out = ident.clone()
    todo = torch.arange(n, device=work)
    for _ in range(_RESAMPLE_ROUNDS):
        disp[todo] = strength * _disc(len(todo), generator, work)
        todo = _try(src, disp, todo, 1.0, out)
        if len(todo) == 0:
            break
    scale = 1.0
    for _ in range(_SHRINK_ROUNDS):
        if len(todo) == 0:
            break
        scale /= 2
        todo = _try(src, disp, todo, scale, out)
    # rows still left keep the identity (unreachable in practice: a displacement of 2^-40 * strength is accepted)
    return out.to(device=device, dtype=torch.complex64)


def _try(src: torch.Tensor, disp: torch.Tensor, todo: torch.Tensor, scale: float, out: torch.Tensor) -> torch.Tensor:
    """Write into ``out`` the acceptable maps for rows ``todo`` (displacements × scale); return the rejected rows."""
    s = src[todo]
    m = _from_points(s, s + scale * disp[todo])
    ok = _acceptable(m)
    out[todo[ok]] = m[ok]
    return todo[~ok]


def _plane_scale(height: int, width: int) -> tuple[float, float]:
    side = max(height, width)
    return width / side, height / side


def mobius_grid(matrices: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sampling grid (n, H, W, 2) for ``F.grid_sample(..., align_corners=False)`` that warps by the maps ``matrices``.

    ``matrices`` (n, 2, 2) complex are forward maps f (source position → output position, as from
    ``sample_mobius``); the grid holds, for the centre w of each output pixel, the source position
    f⁻¹(w) = (d w − b) / (−c w + a) in grid_sample's normalised (x, y) coordinates. The output pixel centres
    are those of ``F.affine_grid(..., align_corners=False)``, so the identity map gives exactly its identity
    grid. Coordinates go through the aspect-corrected plane of the module docstring. The grid is float32
    for complex64 matrices and float64 for complex128; it lives on the matrices' device. Maps with a pole
    inside the image give non-finite coordinates (``sample_mobius`` never returns such maps).
    """
    if not isinstance(matrices, torch.Tensor) or matrices.ndim != 3 or matrices.shape[1:] != (2, 2):
        raise FinetuneError(f"matrices must be an (n, 2, 2) tensor, got "
                            f"{tuple(matrices.shape) if isinstance(matrices, torch.Tensor) else type(matrices).__name__}")
    if isinstance(height, bool) or isinstance(width, bool) or not (isinstance(height, int) and isinstance(width, int)) \
            or height < 1 or width < 1:
        raise FinetuneError(f"height and width must be positive ints, got {height!r} x {width!r}")
    if not matrices.is_complex():
        matrices = matrices.to(torch.complex128 if matrices.dtype == torch.float64 else torch.complex64)
    real = matrices.real.dtype
    dev = matrices.device
    sx, sy = _plane_scale(height, width)
    # the pixel centres exactly as F.affine_grid computes them (align_corners=False), in the plane: w = u + i v
    u = (torch.linspace(-1, 1, width, device=dev, dtype=real) * ((width - 1) / width) * sx)[None, None, :]
    v = (torch.linspace(-1, 1, height, device=dev, dtype=real) * ((height - 1) / height) * sy)[None, :, None]
    a, b, c, d = (matrices[:, i, j, None, None] for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))

    def affine(p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Real and imaginary parts of p w + q over the grid, each a (column term) + (row term) broadcast."""
        return p.real * u + (q.real - p.imag * v), p.imag * u + (q.imag + p.real * v)

    # z = f^-1(w) = (d w - b) / (a - c w), in real arithmetic (about twice as fast as complex tensors on CPU)
    num_r, num_i = affine(d, -b)
    den_r, den_i = affine(-c, a)
    scale = (den_r * den_r).add_(den_i * den_i).reciprocal_()
    out = torch.empty(matrices.shape[0], height, width, 2, dtype=real, device=dev)
    torch.mul((num_r * den_r).add_(num_i * den_i), scale / sx, out=out[..., 0])
    torch.mul((num_i * den_r).sub_(num_r * den_i), scale.div_(sy), out=out[..., 1])
    return out


def _check_strength(strength: float) -> float:
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0 <= strength < MAX_STRENGTH:
        raise FinetuneError(f"strength must be a number in [0, {MAX_STRENGTH:g}), got {strength!r}")
    return float(strength)


class RandomMobius(torch.nn.Module):
    """Warp each image, with probability ``p``, by its own random near-identity Möbius map.

    Works on an N×C×H×W batch (all selected images warped in one ``grid_sample`` call on the batch's device)
    or on one C×H×W image; float images keep their dtype, uint8 images are warped in float32 and rounded and
    clamped back to uint8. Images not selected are returned bit-identical (the input itself when none is).
    Parameters are described in the module docstring; invalid ones raise ``FinetuneError``.
    """

    def __init__(self, p: float = 0.5, strength: float = 0.25, padding_mode: str = "reflection",
                 interpolation: str = "bilinear") -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise FinetuneError(f"p must be a probability in [0, 1], got {p!r}")
        if padding_mode not in PADDING_MODES:
            raise FinetuneError(f"padding_mode must be one of {', '.join(PADDING_MODES)}, got {padding_mode!r}")
        if interpolation not in INTERPOLATIONS:
            raise FinetuneError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
        self.p = float(p)
        self.strength = _check_strength(strength)
        self.padding_mode = padding_mode
        self.interpolation = interpolation

    def extra_repr(self) -> str:
        return (f"p={self.p}, strength={self.strength}, padding_mode={self.padding_mode!r}, "
                f"interpolation={self.interpolation!r}")

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return the augmented batch or image; ``generator`` (any device) makes the draw reproducible."""
        if not isinstance(x, torch.Tensor):
            raise FinetuneError(f"RandomMobius expects a tensor, got {type(x).__name__}")
        if x.ndim not in (3, 4):
            raise FinetuneError(f"RandomMobius expects an N x C x H x W batch or a C x H x W image, got shape {tuple(x.shape)}")
        if not (x.is_floating_point() or x.dtype == torch.uint8):
            raise FinetuneError(f"RandomMobius expects float or uint8 images, got {x.dtype}")
        single = x.ndim == 3
        batch = x.unsqueeze(0) if single else x
        n, _, h, w = batch.shape
        if n == 0 or h == 0 or w == 0:
            return x
        work = generator.device if generator is not None else torch.device("cpu")
        chosen = torch.rand(n, generator=generator, device=work) < self.p
        idx = chosen.nonzero().squeeze(1)
        if len(idx) == 0:
            return x
        matrices = sample_mobius(len(idx), self.strength, generator=generator, device=x.device)
        idx = idx.to(x.device)
        src = batch if len(idx) == n else batch.index_select(0, idx)
        warped = self.warp(src, matrices)
        if len(idx) == n:
            out = warped
        else:
            out = batch.clone()
            out[idx] = warped
        return out.squeeze(0) if single else out

    def warp(self, x: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
        """Warp every image of the N×C×H×W batch ``x`` by its map in ``matrices`` (N, 2, 2); keeps x's dtype."""
        work = torch.float32 if x.dtype == torch.uint8 else x.dtype
        grid = mobius_grid(matrices.to(x.device), x.shape[-2], x.shape[-1]).to(work)
        y = F.grid_sample(x.to(work), grid, mode=self.interpolation, padding_mode=self.padding_mode, align_corners=False)
        if x.dtype == torch.uint8:
            y = y.round_().clamp_(0, 255).to(torch.uint8)
        return y
