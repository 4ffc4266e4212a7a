"""The warp T(x, t) = x + t w(x, t) in any dimension d: what the 3D flow morph (`engine.morph.flow`) and the image
morph (`engine.images.morph`, d = 2) share.

- ``warp`` is a SIREN w of (x, t) (d + 1 inputs) giving a d-vector; T(x, 0) = x EXACTLY (the displacement t w is a
  product with t), so ifmorph's identity loss is zero by construction. T(., -t) is trained to invert T(., t).
- `smoothness_terms`: the thin-plate, membrane and fold penalties of the displacement, differentiable, with the
  second derivatives in space only (the 3D morph) or in space and time (the image morph: ifmorph's thin-plate term
  on the full Hessian in (x, y, t)).
- `spatial_jacobian`: dT/dx at points and a time, for fold reports (det dT/dx > 0 everywhere: no folds).
"""

from __future__ import annotations

import torch
from torch import nn

MIN_JACOBIAN_DETERMINANT = 0.1
"""The fold term pushes det dT/dx above this: a warp may compress a region tenfold in volume (a sphere's cap into
a cube's corner), not fold it."""


def _times(points: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    if not torch.is_tensor(t):
        t = points.new_full((len(points),), float(t))
    return t.reshape(-1, 1).to(points.dtype)


def displacement(warp: nn.Module, points: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """t w(x, t) for points (n, d) and t (n,) or one float: (n, d), exactly zero at t = 0."""
    t = _times(points, t)
    return t * warp(torch.cat([points, t], dim=-1))


def transform(warp: nn.Module, points: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """T(x, t) = x + t w(x, t) for points (n, d) and t (n,) or one float; (n, d). T(x, 0) = x exactly."""
    return points + displacement(warp, points, t)


def smoothness_terms(
    warp: nn.Module,
    points: torch.Tensor,
    times: torch.Tensor,
    directions: torch.Tensor,
    step: float,
    base_jacobian: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin-plate-like, membrane and fold penalties of the displacement u(x, t) = t w(x, t), differentiable.

    - ``points`` (n, d), ``times`` (n,), ``directions`` unit vectors: (n, d) for second derivatives in space only,
      (n, d + 1) for second derivatives in space AND time (the last component moves t).
    - The thin-plate energy needs the Hessian of a vector field: a second-derivative pass through the SIREN per
      entry of the Jacobian, costly on a CPU. Instead, with J the Jacobian of u (du/dx, and du/dt = w + t dw/dt when
      the directions move t; one backward pass per component at two points), E_e |J(z + h e) - J(z)|^2 / h^2 over
      random unit directions e of k components is |Hess u|^2 / k up to O(h^2), where Hess u holds every second
      derivative in those k variables: the same quantity, estimated stochastically, and still zero for every warp
      affine in them (so scaling or turning a shape costs nothing).
    - The membrane term is |du/dx|^2; the fold term max(0, m - det(I + du/dx))^2 (I + du/dx = dT/dx) with m =
      `MIN_JACOBIAN_DETERMINANT`.
    - ``base_jacobian`` (n, d, d): du/dx at ``points`` of a displacement added to ``warp``'s but not passed as a network
      (an analytic part, e.g. the image morph's affine group): added before the membrane and fold terms, so they see
      the whole warp while the thin-plate term sees ``warp`` alone.
    """
    dimension = points.shape[1]
    if directions.shape[1] not in (dimension, dimension + 1):
        raise ValueError(
            f"directions must be (n, {dimension}) (space) or (n, {dimension + 1}) (space and time), got "
            f"{tuple(directions.shape)}"
        )
    in_time = directions.shape[1] == dimension + 1
    if in_time:
        here = torch.cat([points, times.unsqueeze(-1)], dim=-1)
        inputs = torch.cat([here, here + step * directions]).detach().requires_grad_(True)
    else:
        both = torch.cat([points, points + step * directions]).detach()
        inputs = torch.cat([both, times.repeat(2).unsqueeze(-1)], dim=-1).requires_grad_(True)
    values = warp(inputs)
    gradients = [torch.autograd.grad(values[:, axis].sum(), inputs, create_graph=True)[0] for axis in range(dimension)]
    t = inputs[:, dimension:].reshape(-1, 1, 1)
    jacobian = torch.stack([row[:, :dimension] for row in gradients], dim=1) * t  # du/dx = t dw/dx
    spatial = jacobian.split(len(points))[0]
    if base_jacobian is not None:
        spatial = spatial + base_jacobian
    if in_time:  # du/dt = w + t dw/dt, a column beside du/dx
        rate = values + t[:, :, 0] * torch.stack([row[:, dimension] for row in gradients], dim=1)
        jacobian = torch.cat([jacobian, rate.unsqueeze(-1)], dim=-1)
    here, there = jacobian.split(len(points))
    thin_plate = (there - here).square().sum((-2, -1)).mean() / step**2
    membrane = spatial.square().sum((-2, -1)).mean()
    determinant = torch.linalg.det(spatial + torch.eye(dimension, device=spatial.device))
    fold = (MIN_JACOBIAN_DETERMINANT - determinant).clamp_min(0.0).square().mean()
    return thin_plate, membrane, fold


def spatial_jacobian(warp: nn.Module, points: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """dT/dx (n, d, d) at points (n, d) and t (n,) or one float, without a graph (for fold reports: det > 0)."""
    dimension = points.shape[1]
    with torch.enable_grad():
        inputs = points.detach().clone().requires_grad_(True)
        moved = transform(warp, inputs, t)
        rows = [torch.autograd.grad(moved[:, axis].sum(), inputs, retain_graph=axis + 1 < dimension)[0]
                for axis in range(dimension)]
    return torch.stack(rows, dim=1).detach()
