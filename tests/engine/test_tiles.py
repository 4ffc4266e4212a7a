"""Seamless tiles (issue 16): a network with an integer first layer repeats exactly; the forward-mode Jacobian equals
autograd's; the mask and the photo's gradients (never wrapped); the seam score; the seamless objective removes the
seam of a non-periodic image while holding its inside; the command line writes the tile, its 2x2 preview and a
model that renders again. Tiny images and a few hundred steps at most."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from engine.images import cli
from engine.images.field import ImageField, StageConfig, field_period, render
from engine.images.files import load_image_field
from engine.images.fit import psnr
from engine.images.io import check_image, to_srgb
from engine.images.tile import (
    TileConfig, fit_tile, is_periodic, mask, periodicity_error, photo_gradients, seam_score, _jacobian,
)
from engine.networks import IntegerSineLayer, SineLayer, integer_frequencies, sine_jacobian


def periodic_field(height=48, width=64, layers=3, features=64, first_layer="integer"):
    torch.manual_seed(0)
    stage = StageConfig(hidden_features=features, hidden_layers=layers, band=40.0, first_layer=first_layer,
                        period=field_period(height, width))  # fmt: skip
    return ImageField([stage], 3, height, width)


def test_an_integer_first_layer_makes_the_network_repeat_exactly():
    field = periodic_field()  # 3 x 64, a non-square period (2, 1.5)
    assert field_period(48, 64) == (2.0, 1.5) and is_periodic(field)
    assert periodicity_error(field) <= 1e-5
    # The same network with a trained-style random first layer does not repeat: the check can fail.
    assert periodicity_error(periodic_field(first_layer="random")) > 1e-2


def test_the_tile_repeats_across_its_rendered_edges():
    field = periodic_field(32, 32)
    tile = render(field, (32, 32), level=None)
    twice = render(field, (64, 32), region=(0, 0, 64, 32), level=None)  # the network beyond the image: the next tile
    np.testing.assert_allclose(twice[:, 32:], tile, atol=1e-5)


def test_forward_tangents_give_autograds_jacobian():
    torch.manual_seed(0)
    for first in (IntegerSineLayer(integer_frequencies(32, 8), (2.0, 1.5)), SineLayer(2, 32, 20.0, is_first=True)):
        hidden = [SineLayer(32, 32, 30.0, is_first=False), SineLayer(32, 32, 30.0, is_first=False)]
        output = torch.nn.Linear(32, 3)
        u = (torch.rand(20, 2) * 2 - 1).requires_grad_(True)
        value, jacobian = sine_jacobian(first, hidden, output, u)

        def chain(points):
            out = first(points)
            for layer in hidden:
                out = layer(out)
            return output(out)

        expected = torch.stack([torch.autograd.grad(chain(u)[:, c].sum(), u)[0] for c in range(3)], dim=1)
        torch.testing.assert_close(value, chain(u), atol=1e-6, rtol=0)
        torch.testing.assert_close(jacobian, expected, atol=2e-4, rtol=1e-4)
        jacobian.square().sum().backward()  # differentiable with respect to the weights
        assert output.weight.grad is not None and hidden[0].linear.weight.grad.abs().sum() > 0


def test_the_three_jacobian_methods_agree():
    network = periodic_field(features=16).stages[0]
    u = torch.rand(10, 2) * 2 - 1
    forward, backward = _jacobian(network, u, "forward"), _jacobian(network, u, "autograd")
    torch.testing.assert_close(forward, backward, atol=1e-3, rtol=1e-4)
    luminance = _jacobian(network, u, "luminance")[:, 0]
    torch.testing.assert_close(luminance, torch.einsum("ncd,c->nd", backward, torch.tensor([0.2126, 0.7152, 0.0722])))


def test_the_mask_is_one_inside_and_falls_to_near_zero_at_the_edges():
    m = mask(40, 60, 0.2)
    assert m[20, 30] == 1.0 and m[10:30, 15:45].min() == 1.0
    assert m[0].max() < 0.02 and m[:, 0].max() < 0.02 and m[:, -1].max() < 0.02
    np.testing.assert_allclose(m, m[::-1, ::-1])


def test_photo_gradients_are_one_sided_at_the_edges_never_wrapped():
    ramp = np.tile(np.linspace(0.0, 1.0, 20)[None, :, None], (10, 1, 1))
    gradients = photo_gradients(ramp)
    np.testing.assert_allclose(gradients[..., 0, 0], 1.0 / 19, atol=1e-7)  # a wrapped difference would jump at the edges
    np.testing.assert_allclose(gradients[..., 0, 1], 0.0, atol=1e-7)


def test_the_seam_score_is_about_one_for_a_periodic_image_and_large_for_a_ramp():
    spectrum = np.fft.fft2(np.random.default_rng(0).normal(size=(128, 128)))
    frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(128), np.fft.fftfreq(128)))
    periodic = np.real(np.fft.ifft2(spectrum * np.exp(-((frequency / 0.08) ** 2))))[..., None]  # periodic noise
    assert seam_score(periodic) == pytest.approx(1.0, abs=0.15)
    x = (np.arange(64) + 0.5) / 64
    ramp = np.tile(x[None, :, None], (64, 1, 1))
    assert seam_score(ramp) > 20


def synthetic_photo(size=48):
    """Not periodic: a diagonal ramp (a jump of 0.5 at each wrap) and a texture of non-integer periods."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    texture = 0.08 * np.sin(2 * np.pi * (5.3 * x + 1.7 * y)) + 0.06 * np.sin(2 * np.pi * (2.2 * x - 6.6 * y))
    encoded = 0.25 + 0.25 * x + 0.25 * y + texture
    return np.repeat(encoded[..., None], 3, axis=2) * [1.0, 0.9, 0.8]


def test_the_seamless_objective_removes_the_seam_and_holds_the_inside():
    encoded = synthetic_photo()
    image = check_image(encoded.astype(np.float32), "synthetic")
    config = TileConfig(hidden_features=64, steps=300, value_batch=0, gradient_batch=0, border=0.2, device="cpu")
    field, summary = fit_tile(image, config)
    tile = to_srgb(render(field, level=None))
    assert seam_score(encoded) > 5  # measured 6.8
    assert seam_score(tile) < 1.6  # measured 0.98
    assert summary["psnr_inside_db"] >= 35.0 and summary["periodicity_error"] <= 1e-5
    # Values everywhere and no gradient term: the periodic network must still close the seam, but it rings.
    plain, _ = fit_tile(image, TileConfig(hidden_features=64, steps=300, value_batch=0, gradient_batch=0,
                                          border=0.2, gradient_weight=0.0, device="cpu"))  # fmt: skip
    assert 1.5 * seam_score(tile) < seam_score(to_srgb(render(plain, level=None)))  # measured 3.1


def test_cli_tile_writes_the_tile_its_preview_and_a_periodic_model(tmp_path, capsys):
    iio.imwrite(tmp_path / "photo.png", (synthetic_photo(40)[:32] * 255).round().astype(np.uint8))
    argv = ["tile", str(tmp_path / "photo.png"), "-o", str(tmp_path / "out"), "--steps", "30", "--device", "cpu"]
    assert cli.main(argv) == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.pt", "preview_2x2.png", "tile.png"]
    tile = iio.imread(out / "tile.png")
    assert tile.shape == (32, 40, 3) and iio.imread(out / "preview_2x2.png").shape == (64, 80, 3)
    np.testing.assert_array_equal(iio.imread(out / "preview_2x2.png")[32:, 40:], tile)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"seam_score", "seam_score_photo", "psnr_inside_db", "train_seconds", "periodicity_error"} <= set(metrics)
    field, metadata = load_image_field(out / "model.pt")
    assert is_periodic(field) and metadata["image_tile"]["config"]["steps"] == 30
    assert cli.main([*argv[:3], str(tmp_path / "big"), "--steps", "5", "--size", "80", "--device", "cpu"]) == 0
    assert iio.imread(tmp_path / "big" / "tile.png").shape == (64, 80, 3)
    assert cli.main(["render", str(out / "model.pt"), "-o", str(tmp_path / "r.png"), "--size", "20", "16"]) == 0
    assert "seam score" in capsys.readouterr().out


def test_tile_settings_are_checked_and_a_mask_without_a_border_band_trains_on_values_alone():
    with pytest.raises(ValueError, match="border"):
        TileConfig(border=0.6)
    image = check_image(synthetic_photo(16).astype(np.float32))
    _, summary = fit_tile(image, TileConfig(hidden_features=16, steps=3, border=1e-3, gradient_weight=0.0, device="cpu"))
    assert np.isfinite(summary["psnr_inside_db"])
    assert psnr(np.zeros(3), np.zeros(3)) == float("inf")
