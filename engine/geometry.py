"""Differential geometry of the level sets of an SDF network: gradient, Hessian, curvatures, principal directions.

Conventions (`engine.conventions.CURVATURE_CONVENTION`), shared by every function here:

- SDF negative inside, positive outside; normals n = grad f / |grad f| point outward.
- kappa = div(grad f / |grad f|) = k1 + k2, positive on a convex surface (a sphere of radius r has kappa = 2 / r).
- Mean curvature H = kappa / 2 (a sphere: H = 1 / r). Gaussian K = k1 k2 = -det([[Hess f, grad f], [grad f^T, 0]])
  / |grad f|^4 (a sphere: K = 1 / r^2). Principal curvatures k1 >= k2 = H +- sqrt(max(H^2 - K, 0)) (evaluated
  in a form without cancellation, see `_principal_half_gap_and_directions`).
- The curvatures at a point are those of the level set through it, so they are defined off the zero set too.

Every function takes any `torch.nn.Module` mapping points (n, 3) to values (n,), evaluated row by row (no
batch-coupled layers), in float32 or float64. A `Siren` gets an explicit derivative pass (`method="siren"`,
chosen by ``"auto"``; `engine.networks.siren_derivatives`): it propagates the Jacobian forward and the adjoint backward, 5 matrix products per layer
against 8 for autograd's gradient-of-gradient, and measures ~1.6x faster than the autograd double loop (and than
every generic form tried: batched, torch.func) at 100k points on the CPU (bench/curvature_speed.py).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import torch
from torch import nn

from .conventions import MEAN_CURVATURE_FACTOR
from .networks import Siren, siren_derivatives

if TYPE_CHECKING:
    from .model import SDFModel

HessianMethod = Literal["auto", "siren", "autograd"]
"""How second derivatives are taken: "siren" (explicit pass, `Siren` only), "autograd" (any module: batched
gradient-of-gradient), or "auto" (the first for a `Siren`, the second otherwise)."""

HESSIAN_BATCH_SIZE = 4096
"""Points per batch for second derivatives: ~100 MB in float32 for a 3x256 Siren, and faster than larger batches
on the CPU (the working set stays in cache)."""

GRADIENT_BATCH_SIZE = 16384
"""Points per batch when only values and gradients are needed."""

class Derivatives(NamedTuple):
    """f, grad f and Hess f at n points, as CPU tensors in the dtype they were computed in."""

    value: torch.Tensor
    """(n,)"""
    gradient: torch.Tensor
    """(n, 3)"""
    hessian: torch.Tensor
    """(n, 3, 3), symmetric."""


@dataclass(frozen=True)
class Curvatures:
    """Curvatures of the level sets of f through n points (numpy arrays in the dtype of the computation).

    - Sign: SDF negative inside, outward normals; curvatures are positive on a convex surface.
    - ``mean`` is H = kappa / 2 where kappa = div(grad f / |grad f|) = k1 + k2 (`kappa` gives kappa itself).
    - ``gaussian`` is K = k1 * k2; ``k1 >= k2`` are the principal curvatures.
    - ``dir1``, ``dir2`` are unit principal directions of k1, k2, tangent to the level set, with (dir1, dir2, n)
      right-handed; at an umbilic point (k1 = k2, e.g. a sphere) they are some orthonormal tangent pair.
    - Where grad f = 0 the level set has no normal and the curvatures are NaN.
    """

    points: np.ndarray
    """(n, 3) where everything below was evaluated."""
    value: np.ndarray
    """(n,) f (the signed distance for an exact SDF)."""
    gradient: np.ndarray
    """(n, 3) grad f."""
    mean: np.ndarray
    """(n,) mean curvature H = kappa / 2 = (k1 + k2) / 2."""
    gaussian: np.ndarray
    """(n,) Gaussian curvature K = k1 * k2."""
    k1: np.ndarray
    """(n,) larger principal curvature."""
    k2: np.ndarray
    """(n,) smaller principal curvature."""
    dir1: np.ndarray
    """(n, 3) unit principal direction of k1."""
    dir2: np.ndarray
    """(n, 3) unit principal direction of k2."""

    @property
    def kappa(self) -> np.ndarray:
        """kappa = div(grad f / |grad f|) = k1 + k2 = 2 H (the level-set and mean-curvature-flow speed)."""
        return self.mean / MEAN_CURVATURE_FACTOR

    @property
    def abs_mean(self) -> np.ndarray:
        """|H|: how strongly the surface bends on average, whatever the sign."""
        return np.abs(self.mean)

    @property
    def curvedness(self) -> np.ndarray:
        """Koenderink's curvedness sqrt((k1^2 + k2^2) / 2): zero only where the surface is flat."""
        return np.sqrt((self.k1**2 + self.k2**2) / 2)

    @property
    def normal(self) -> np.ndarray:
        """(n, 3) outward unit normal grad f / |grad f|."""
        return self.gradient / np.linalg.norm(self.gradient, axis=1, keepdims=True)


def value_and_gradient(
    f: nn.Module, points, *, batch_size: int = GRADIENT_BATCH_SIZE, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """f (n,) and grad f (n, 3) at points (n, 3), as CPU tensors, in batches of ``batch_size`` points.

    For an SDF (negative inside) grad f points outward.
    ``dtype`` None computes in the module's dtype (the points' dtype for a module without parameters); another
    dtype runs on a converted copy of the module, so ``torch.float64`` checks a float32 network.
    """
    network, query = _prepare(f, points, dtype)
    value = torch.empty(len(query), dtype=query.dtype)
    gradient = torch.empty(len(query), 3, dtype=query.dtype)
    for start in range(0, len(query), _check_batch_size(batch_size)):
        chunk_value, chunk_gradient = _value_and_gradient(network, query[start : start + batch_size])
        value[start : start + batch_size] = chunk_value.cpu()
        gradient[start : start + batch_size] = chunk_gradient.cpu()
    return value, gradient


def gradient_and_hessian(
    f: nn.Module,
    points,
    batch_size: int = HESSIAN_BATCH_SIZE,
    *,
    dtype: torch.dtype | None = None,
    method: HessianMethod = "auto",
) -> Derivatives:
    """f, grad f and Hess f at points (n, 3) (array or tensor), in batches of ``batch_size`` points.

    - For an SDF (negative inside) grad f points outward; Hess f is that of f itself, no curvature convention.
    - ``method``: see `HessianMethod`; both give the same numbers up to rounding.
    - ``dtype``: as in `value_and_gradient`.
    - Results are CPU tensors; the work runs on the module's device.
    """
    network, query = _prepare(f, points, dtype)
    return _batched_derivatives(network, query, batch_size, method)


def curvatures(
    f: nn.Module,
    points,
    *,
    batch_size: int = HESSIAN_BATCH_SIZE,
    dtype: torch.dtype | None = None,
    method: HessianMethod = "auto",
) -> Curvatures:
    """Curvatures of the level sets of f through points (n, 3), in f's own coordinates.

    - Sign: SDF negative inside, outward normals; kappa = k1 + k2 > 0 on a convex surface.
    - ``Curvatures.mean`` is H = kappa / 2; ``gaussian`` is K = k1 k2; see `Curvatures`.
    - ``batch_size``, ``dtype``, ``method``: as in `gradient_and_hessian`.
    """
    network, query = _prepare(f, points, dtype)
    return curvatures_from_derivatives(query.cpu(), _batched_derivatives(network, query, batch_size, method))


def curvatures_from_derivatives(points: torch.Tensor, derivatives: Derivatives) -> Curvatures:
    """Curvatures (see `Curvatures` for the convention: H = kappa / 2, K = k1 k2, k1 >= k2, outward normals)
    from the gradient and Hessian of f at points (n, 3) (CPU tensors), however they were computed."""
    points, gradient, hessian = points.detach(), derivatives.gradient.detach(), derivatives.hessian.detach()
    count = len(points)
    if points.shape != (count, 3) or gradient.shape != (count, 3) or hessian.shape != (count, 3, 3):
        raise ValueError(
            f"points, gradient and hessian must be (n, 3), (n, 3) and (n, 3, 3), got {tuple(points.shape)}, "
            f"{tuple(gradient.shape)} and {tuple(hessian.shape)}"
        )
    squared_norm = (gradient * gradient).sum(-1)
    norm = squared_norm.sqrt()
    trace = hessian.diagonal(dim1=-2, dim2=-1).sum(-1)
    along_gradient = torch.einsum("ni,nij,nj->n", gradient, hessian, gradient)
    kappa = (squared_norm * trace - along_gradient) / (norm * squared_norm)  # div(grad f / |grad f|)
    mean = MEAN_CURVATURE_FACTOR * kappa
    # -det([[A, g], [g^T, 0]]) = g^T adj(A) g for a 3x3 A, so K needs only the cofactors of the Hessian.
    gaussian = torch.einsum("ni,nij,nj->n", gradient, _adjugate(hessian), gradient) / (squared_norm * squared_norm)
    normal = gradient / norm.unsqueeze(-1)
    half_gap, dir1, dir2 = _principal_half_gap_and_directions(normal, hessian / norm[:, None, None])
    return Curvatures(
        points=points.numpy(),
        value=derivatives.value.detach().numpy(),
        gradient=gradient.numpy(),
        mean=mean.numpy(),
        gaussian=gaussian.numpy(),
        k1=(mean + half_gap).numpy(),
        k2=(mean - half_gap).numpy(),
        dir1=dir1.numpy(),
        dir2=dir2.numpy(),
    )


def project_to_surface(
    f: nn.Module,
    points,
    steps: int = 10,
    tol: float = 1e-6,
    *,
    batch_size: int = GRADIENT_BATCH_SIZE,
    dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Move points (n, 3) onto the zero level set of f by damped Newton steps x <- x - a f grad f / |grad f|^2.

    - The sign of f does not matter: points inside (f < 0) move outward along grad f, points outside inward.
    - The step factor a starts at 1 (one step lands an exact SDF on its surface from any distance) and is halved
      for a point whenever the step would not decrease |f| there, so points far out where f is no distance
      (an untrained part of a network) do not jump away.
    - A point stops when |f| <= ``tol`` (in f's units) or after ``steps`` evaluations; points where grad f = 0
      stay where they are.
    - Returns the projected points (n, 3) and the final |f| (n,), both numpy in the computation ``dtype``
      (see `value_and_gradient`); check |f| to see which points did not reach the surface.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    network, query = _prepare(f, points, dtype)
    projected = torch.empty(len(query), 3, dtype=query.dtype)
    residual = torch.empty(len(query), dtype=query.dtype)
    for start in range(0, len(query), _check_batch_size(batch_size)):
        chunk_points, chunk_residual = _newton_projection(network, query[start : start + batch_size], steps, tol)
        projected[start : start + batch_size] = chunk_points.cpu()
        residual[start : start + batch_size] = chunk_residual.cpu()
    return projected.numpy(), residual.numpy()


def model_curvatures(
    model: SDFModel,
    points,
    *,
    project: bool = False,
    steps: int = 10,
    tol: float = 1e-6,
    batch_size: int = HESSIAN_BATCH_SIZE,
    dtype: torch.dtype | None = None,
    method: HessianMethod = "auto",
) -> Curvatures:
    """Curvatures of a fitted model's level sets at points (n, 3) given in INPUT coordinates, in input units.

    - Same convention as `curvatures`: outward normals, kappa = k1 + k2 > 0 on convex, ``mean`` H = kappa / 2.
    - The network works in unit-cube coordinates u = (x - center) * scale, so the curvatures it gives are
      multiplied by ``scale`` (Gaussian by ``scale``^2) and f by 1 / ``scale`` (a distance in input units);
      gradients and directions need no change.
    - ``project``: first move the points onto the zero level set (`project_to_surface`, ``steps`` and ``tol`` in
      unit-cube units), e.g. the vertices of the user's original mesh; ``Curvatures.points`` are then the
      projected points (input coordinates) and ``value`` shows how far each one still is from the surface.
    """
    input_points = np.asanyarray(points, dtype=np.float64)
    if input_points.ndim != 2 or input_points.shape[1] != 3:
        raise ValueError(f"points must be (n, 3), got shape {input_points.shape}")
    normalization = model.normalization
    unit_points = normalization.to_unit(input_points)
    if project:
        unit_points, _ = project_to_surface(model.network, unit_points, steps, tol, dtype=dtype)
        input_points = normalization.to_input(unit_points.astype(np.float64))
    unit = curvatures(model.network, unit_points, batch_size=batch_size, dtype=dtype, method=method)
    scale = normalization.scale
    return Curvatures(
        points=input_points,
        value=unit.value / scale,
        gradient=unit.gradient,
        mean=unit.mean * scale,
        gaussian=unit.gaussian * scale**2,
        k1=unit.k1 * scale,
        k2=unit.k2 * scale,
        dir1=unit.dir1,
        dir2=unit.dir2,
    )


def _prepare(f: nn.Module, points, dtype: torch.dtype | None) -> tuple[nn.Module, torch.Tensor]:
    """The module in the computation dtype and the points as a tensor on its device, checked to be (n, 3)."""
    if not isinstance(f, nn.Module):
        raise ValueError(f"f must be a torch.nn.Module mapping (n, 3) points to (n,) values, got {type(f).__name__}")
    tensors = [t for t in itertools.chain(f.parameters(), f.buffers()) if t.is_floating_point()]
    if isinstance(points, torch.Tensor):
        query = points.detach()
    else:
        query = torch.as_tensor(np.asanyarray(points))
    if query.ndim != 2 or query.shape[1] != 3:
        raise ValueError(f"points must be (n, 3), got shape {tuple(query.shape)}")
    if dtype is None:
        dtype = tensors[0].dtype if tensors else query.dtype if query.is_floating_point() else torch.float64
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    if any(t.dtype != dtype for t in tensors):
        # A converted copy: the caller's module keeps its dtype.
        f = copy.deepcopy(f).to(dtype)
    device = tensors[0].device if tensors else query.device
    return f, query.to(device, dtype)


def _batched_derivatives(
    network: nn.Module, query: torch.Tensor, batch_size: int, method: HessianMethod
) -> Derivatives:
    derivatives_of = _pick_method(network, method)
    value = torch.empty(len(query), dtype=query.dtype)
    gradient = torch.empty(len(query), 3, dtype=query.dtype)
    hessian = torch.empty(len(query), 3, 3, dtype=query.dtype)
    for start in range(0, len(query), _check_batch_size(batch_size)):
        chunk = derivatives_of(network, query[start : start + batch_size])
        value[start : start + batch_size] = chunk.value.cpu()
        gradient[start : start + batch_size] = chunk.gradient.cpu()
        hessian[start : start + batch_size] = chunk.hessian.cpu()
    return Derivatives(value, gradient, hessian)


def _check_batch_size(batch_size: int) -> int:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return batch_size


def _checked_value(f: nn.Module, points: torch.Tensor) -> torch.Tensor:
    value = f(points)
    if value.shape != (len(points),):
        raise ValueError(f"f must map (n, 3) points to (n,) values, but it returned shape {tuple(value.shape)}")
    return value


def _pick_method(network: nn.Module, method: HessianMethod):
    if method == "auto":
        method = "siren" if _is_plain_siren(network) else "autograd"
    if method == "siren":
        if not _is_plain_siren(network):
            raise ValueError(f'method "siren" needs a Siren with 3 inputs, got {type(network).__name__}')
        return _siren_derivatives
    if method == "autograd":
        return _autograd_derivatives
    raise ValueError(f'method must be "auto", "siren" or "autograd", got {method!r}')


def _is_plain_siren(network: nn.Module) -> bool:
    # Exactly Siren: a subclass may change forward(), which the explicit pass would not follow.
    return type(network) is Siren and network.config.in_features == 3


def _value_and_gradient(f: nn.Module, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode(False), torch.enable_grad():
        points = points.detach().clone().requires_grad_(True)
        value = _checked_value(f, points)
        (gradient,) = torch.autograd.grad(value.sum(), points, materialize_grads=True)
    return value.detach(), gradient


def _autograd_derivatives(f: nn.Module, points: torch.Tensor) -> Derivatives:
    """Hessian rows as one batched backward pass over the gradient (the fastest autograd form measured here)."""
    with torch.inference_mode(False), torch.enable_grad():
        points = points.detach().clone().requires_grad_(True)
        value = _checked_value(f, points)
        (gradient,) = torch.autograd.grad(value.sum(), points, create_graph=True, materialize_grads=True)
        if gradient.requires_grad:
            basis = torch.eye(3, dtype=points.dtype, device=points.device)
            (rows,) = torch.autograd.grad(
                gradient,
                points,
                basis.unsqueeze(1).expand(3, len(points), 3),
                is_grads_batched=True,
                materialize_grads=True,
            )
            hessian = rows.permute(1, 0, 2)
            hessian = (hessian + hessian.transpose(1, 2)) / 2
        else:  # f is affine in the points
            hessian = points.new_zeros(len(points), 3, 3)
    return Derivatives(value.detach(), gradient.detach(), hessian.detach())


def _siren_derivatives(network: Siren, points: torch.Tensor) -> Derivatives:
    return Derivatives(*siren_derivatives(network, points))


def _adjugate(matrix: torch.Tensor) -> torch.Tensor:
    """Adjugate (transposed cofactor matrix) of symmetric 3x3 matrices (n, 3, 3)."""
    a, b, c = matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 0, 2]
    d, e, g = matrix[:, 1, 1], matrix[:, 1, 2], matrix[:, 2, 2]
    rows = [
        [d * g - e * e, c * e - b * g, b * e - c * d],
        [c * e - b * g, a * g - c * c, b * c - a * e],
        [b * e - c * d, b * c - a * e, a * d - b * b],
    ]
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def _tangent_basis(normal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit vectors completing unit normals (n, 3) to right-handed orthonormal frames.

    Duff et al., "Building an Orthonormal Basis, Revisited" (JCGT 2017): no division by a small number anywhere.
    """
    x, y, z = normal.unbind(-1)
    sign = torch.where(z >= 0, 1.0, -1.0).to(normal.dtype)
    a = -1.0 / (sign + z)
    b = x * y * a
    first = torch.stack([1.0 + sign * x * x * a, sign * b, -sign * x], dim=-1)
    second = torch.stack([b, sign + y * y * a, -y], dim=-1)
    return first, second


def _principal_half_gap_and_directions(
    normal: torch.Tensor, shape: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(k1 - k2) / 2 and unit principal directions of k1 >= k2, from normals and Hess f / |grad f| (whose
    restriction to the tangent plane is the shape operator), by the closed-form eigensystem of that 2x2 matrix.

    (k1 - k2) / 2 = sqrt(H^2 - K) = sqrt(((p - r) / 2)^2 + q^2) for the restriction [[p, q], [q, r]]: the right
    side has no cancellation, so k1 and k2 stay accurate near umbilics, where H^2 - K loses half the digits.
    """
    first, second = _tangent_basis(normal)
    along_first = torch.einsum("ni,nij,nj->n", first, shape, first)
    across = torch.einsum("ni,nij,nj->n", first, shape, second)
    along_second = torch.einsum("ni,nij,nj->n", second, shape, second)
    half_gap = torch.hypot((along_first - along_second) / 2, across)
    # The eigenvector of [[p, q], [q, r]] with the larger eigenvalue is at angle atan2(2q, p - r) / 2; at an
    # umbilic atan2(0, 0) = 0 picks the first basis vector, which is as good as any.
    angle = torch.atan2(2 * across, along_first - along_second) / 2
    dir1 = torch.cos(angle).unsqueeze(-1) * first + torch.sin(angle).unsqueeze(-1) * second
    dir2 = torch.linalg.cross(normal, dir1)
    return half_gap, dir1, dir2


def _newton_projection(
    f: nn.Module, points: torch.Tensor, steps: int, tol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    points = points.clone()
    value, gradient = _value_and_gradient(f, points)
    step_factor = torch.ones_like(value)
    for _ in range(steps):
        squared_norm = (gradient * gradient).sum(-1)
        moving = torch.nonzero((value.abs() > tol) & (squared_norm > 0)).squeeze(-1)
        if len(moving) == 0:
            break
        newton_step = (step_factor[moving] * value[moving] / squared_norm[moving]).unsqueeze(-1) * gradient[moving]
        candidate = points[moving] - newton_step
        candidate_value, candidate_gradient = _value_and_gradient(f, candidate)
        better = candidate_value.abs() < value[moving].abs()
        accepted, rejected = moving[better], moving[~better]
        points[accepted] = candidate[better]
        value[accepted] = candidate_value[better]
        gradient[accepted] = candidate_gradient[better]
        step_factor[accepted] = 1.0
        step_factor[rejected] /= 2
    return points, value.abs()
