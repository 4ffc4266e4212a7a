"""Image networks (issue 16): colour conversion, image files and their refusals, the Gaussian pyramid's alignment,
MR-Net level sums and per-pixel levels, fits reaching a PSNR bar, image model files and the command line (fit and
render). Tiny images (32^2 to 64^2) and a few hundred steps at most: seconds each."""

import json
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from engine.images import cli
from engine.images.field import (
    ImageField, StageConfig, evaluate, footprint_level, level_weights, region_positions, render, sample, to_field,
)
from engine.images.files import IMAGE_FORMAT, load_image_field, save_image_field
from engine.images.fit import ImageFitConfig, check_levels, fit_image, psnr, tuner_low_limit
from engine.images.io import (
    ImageError, check_image, linear_to_srgb, read_image, srgb_to_linear, to_linear, to_srgb, write_image,
)
from engine.images.pyramid import (
    box_downsample, downsample, downsample_weights, gaussian_pyramid, level_centres, level_shape, tower_step,
)
from engine.networks import clamp_columns, integer_frequencies


def smooth_image(height=32, width=32, channels=3, seed=0):
    """A smooth synthetic image (linear light in [0.05, 0.95]): low sinusoids per channel."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    layers = []
    for _ in range(channels):
        fx, fy, phase = rng.uniform(0.5, 2.0), rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi)
        layers.append(0.5 + 0.35 * np.sin(2 * np.pi * (fx * x + fy * y) + phase) * np.cos(2 * np.pi * fy * x))
    return np.stack(layers, axis=2).astype(np.float32)


def small_field(levels=3, channels=3, coupled=True, seed=0):
    torch.manual_seed(seed)
    stages = [StageConfig(hidden_features=16, hidden_layers=1, band=8.0 * 2**i, coupled=coupled and i > 0) for i in range(levels)]
    return ImageField(stages, channels, 32, 48).eval()


# Colour and files


def test_srgb_round_trip_and_known_values():
    x = np.linspace(-0.5, 2.0, 2001)
    np.testing.assert_allclose(srgb_to_linear(linear_to_srgb(x)), x, atol=1e-12)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-12)
    np.testing.assert_allclose(srgb_to_linear(np.array([0.0, 0.04045, 0.5, 1.0])), [0.0, 0.04045 / 12.92, 0.214041, 1.0], atol=1e-6)
    t = torch.linspace(-0.5, 2.0, 101, dtype=torch.float64)
    np.testing.assert_allclose(srgb_to_linear(t).numpy(), srgb_to_linear(t.numpy()), atol=1e-12)
    np.testing.assert_allclose(linear_to_srgb(t).numpy(), linear_to_srgb(t.numpy()), atol=1e-12)


def test_an_8_bit_png_reads_back_the_same_bytes_and_alpha_stays_linear(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (16, 24, 4), dtype=np.uint8)
    iio.imwrite(tmp_path / "in.png", data)
    image = read_image(tmp_path / "in.png")
    assert (image.width, image.height, image.channels, image.source_encoding) == (24, 16, 4, "srgb")
    np.testing.assert_allclose(image.pixels[..., 3], data[..., 3] / 255.0, atol=1e-7)  # alpha not decoded
    assert image.pixels[..., :3].mean() < data[..., :3].mean() / 255.0  # colour decoded to linear (darker)
    write_image(tmp_path / "out.png", image.pixels)
    assert np.array_equal(iio.imread(tmp_path / "out.png"), data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "out.png"]  # no temporary left


def test_grey_and_jpeg_files(tmp_path):
    grey = (smooth_image(20, 30, 1)[..., 0] * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "g.jpg", grey)
    image = read_image(tmp_path / "g.jpg")
    assert image.pixels.shape == (20, 30, 1)
    write_image(tmp_path / "g2.jpg", image.pixels)
    assert np.abs(iio.imread(tmp_path / "g2.jpg").astype(int) - iio.imread(tmp_path / "g.jpg")).max() <= 8


def test_bad_image_files_are_refused_with_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="is a folder"):
        read_image(tmp_path)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageError, match="not an image file imageio can read"):
        read_image(tmp_path / "notes.png")
    iio.imwrite(tmp_path / "tiny.png", np.zeros((4, 40, 3), np.uint8))
    with pytest.raises(ImageError, match=r"40x4 pixels, too small"):
        read_image(tmp_path / "tiny.png")
    nan = np.full((16, 16, 3), 0.5, np.float32)
    nan[3, 4, 1] = np.nan
    iio.imwrite(tmp_path / "nan.tif", nan)
    with pytest.raises(ImageError, match=r"NaN or infinite values \(1 pixels\)"):
        read_image(tmp_path / "nan.tif")


def test_bad_pixel_arrays_are_refused_with_what_is_wrong():
    with pytest.raises(ImageError, match="5 channels"):
        check_image(np.zeros((16, 16, 5), np.uint8))
    with pytest.raises(ImageError, match="3 frames"):
        check_image(np.zeros((3, 16, 16, 3), np.uint8))
    with pytest.raises(ImageError, match="must lie in"):
        check_image(np.full((16, 16, 3), 1.5, np.float32))
    with pytest.raises(ImageError, match="not pixels"):
        check_image(np.array([["a"] * 16] * 16))
    assert check_image(np.full((16, 16, 3), 1.5, np.float32), encoding="linear").pixels.max() == 1.5


def test_writing_refuses_alpha_in_jpeg_and_unknown_suffixes(tmp_path):
    with pytest.raises(ImageError, match="no alpha"):
        write_image(tmp_path / "a.jpg", np.zeros((8, 8, 4), np.float32))
    with pytest.raises(ImageError, match="writes .png"):
        write_image(tmp_path / "a.bmp", np.zeros((8, 8, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


# The pyramid


def test_pyramid_taps_are_normalised_and_centred_between_two_pixels():
    weights = downsample_weights()
    assert weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(weights, weights[::-1])  # symmetric about offset 0.5: the new pixel's centre
    assert np.dot(weights, np.arange(-2, 4)) == pytest.approx(0.5)


def test_pyramid_alignment_a_ramp_stays_the_ramp_at_each_level_centres():
    """Level j's pixel a holds the value at its centre (a + 0.5) 2^j: a linear ramp in level-0 pixel units comes
    back exactly at every level's `level_centres` (away from the mirrored borders)."""
    height, width = 40, 64
    y, x = np.mgrid[0:height, 0:width] + 0.5
    ramp = np.stack([0.01 * x + 0.002 * y, 0.003 * y], axis=2)
    pyramid = gaussian_pyramid(ramp, 4)
    for level, values in enumerate(pyramid):
        assert values.shape[:2] == level_shape(height, width, level)
        centres = level_centres(height, width, level).reshape(*values.shape[:2], 2)
        expected = np.stack([0.01 * centres[..., 0] + 0.002 * centres[..., 1], 0.003 * centres[..., 1]], axis=2)
        inner = slice(3, -3)  # three pixels of each level are within reach of the mirrored border
        np.testing.assert_allclose(values[inner, inner], expected[inner, inner], atol=1e-5)


def test_a_tower_step_samples_the_next_level_at_this_levels_pixels():
    """The tower step is the same Gaussian centred on the pixels: a ramp stays the ramp at the same centres, and
    its pixels midway between two of the pyramid's next level agree with the pyramid there."""
    y, x = np.mgrid[0:32, 0:48] + 0.5
    ramp = (0.01 * x + 0.003 * y)[..., None]
    np.testing.assert_allclose(tower_step(ramp)[4:-4, 4:-4], ramp[4:-4, 4:-4], atol=1e-6)
    wave = (0.5 + 0.3 * np.sin(0.35 * x + 0.2 * y))[..., None]
    tower, coarse = tower_step(wave)[..., 0], downsample(wave)[..., 0]
    # the coarse pixel (a, b) sits at level-0 position (2a + 1, 2b + 1): the corner shared by four tower pixels,
    # whose mean (bilinear) matches it to second order in the wave's frequency
    midway = 0.25 * (tower[:-1:2, :-1:2] + tower[1::2, :-1:2] + tower[:-1:2, 1::2] + tower[1::2, 1::2])
    np.testing.assert_allclose(midway[2:-2, 2:-2], coarse[2:-2, 2:-2], atol=0.01)


def test_pyramid_keeps_constants_blob_centres_and_odd_sides():
    constant = gaussian_pyramid(np.full((37, 23, 2), 0.25, np.float32), 4)
    assert [level.shape[:2] for level in constant] == [(37, 23), (19, 12), (10, 6), (5, 3)]
    assert all(np.allclose(level, 0.25, atol=1e-6) for level in constant)
    y, x = np.mgrid[0:64, 0:64] + 0.5
    blob = np.exp(-((x - 25.0) ** 2 + (y - 38.0) ** 2) / (2 * 4.0**2))[..., None]
    coarse = gaussian_pyramid(blob, 3)[2][..., 0]
    centres = level_centres(64, 64, 2)
    centroid = (coarse.ravel()[:, None] * centres).sum(axis=0) / coarse.sum()
    np.testing.assert_allclose(centroid, [25.0, 38.0], atol=1e-3)


def test_pyramid_filters_colour_premultiplied_so_transparent_pixels_do_not_bleed():
    pixels = np.zeros((16, 16, 4), np.float32)
    pixels[:, :8] = [0.0, 0.0, 1.0, 1.0]  # opaque blue
    pixels[:, 8:] = [1.0, 0.0, 0.0, 0.0]  # transparent "red"
    level = downsample(pixels, alpha=True)
    assert level[..., 0].max() < 1e-6 and np.allclose(level[level[..., 3] > 0.01][:, 2], 1.0, atol=1e-5)


def test_box_downsample_is_the_block_mean():
    pixels = np.arange(4 * 6 * 1, dtype=np.float32).reshape(4, 6, 1)
    np.testing.assert_allclose(box_downsample(pixels, 2)[..., 0], [[3.5, 5.5, 7.5], [15.5, 17.5, 19.5]])


# Levels


def test_integer_levels_give_stage_sums_and_fractions_interpolate():
    field = small_field(levels=3)
    u = torch.rand(50, 2) * 2 - 1
    with torch.no_grad():
        stages = field.stage_outputs(u)
        for k in range(4):
            expected = sum(stages[:k], torch.zeros_like(stages[0]))
            torch.testing.assert_close(field(u, float(k)), expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(field(u, 1.25), stages[0] + 0.25 * stages[1], atol=1e-6, rtol=0)
        torch.testing.assert_close(field(u), field(u, 3.0))
        per_point = torch.tensor([0.0, 1.0, 1.5, 2.0, 3.0] * 10)
        rows = torch.stack([field(u[i : i + 1], float(per_point[i]))[0] for i in range(len(u))])
        torch.testing.assert_close(field(u, per_point), rows, atol=1e-6, rtol=0)
    assert level_weights(2.5, 4).tolist() == [1.0, 1.0, 0.5, 0.0]


def test_per_pixel_level_comes_from_the_footprint():
    field = small_field(levels=4)
    assert footprint_level(1.0, 4) == 4 and footprint_level(0.25, 4) == 4 and footprint_level(4.0, 4) == 2
    assert footprint_level(1000.0, 4) == 1  # never coarser than the coarsest stage
    quarter = render(field, (12, 8), level="auto")  # 48x32 image at 1/4: 4 input pixels per output pixel
    np.testing.assert_allclose(quarter, render(field, (12, 8), level=2.0), atol=1e-6)
    np.testing.assert_allclose(render(field, level="auto"), render(field, level=None), atol=1e-6)
    # A map whose left half steps 1 input pixel per output pixel and right half 4: each half gets its own level.
    x = np.concatenate([np.arange(8) + 0.5, 8.5 + 4 * np.arange(1, 9)])
    positions = np.stack(np.meshgrid(x, np.full(3, 16.0)), axis=2)
    positions[..., 1] += np.arange(3)[:, None]
    mixed = sample(field, positions)
    np.testing.assert_allclose(mixed[:, :7], sample(field, positions, 4.0)[:, :7], atol=1e-6)
    np.testing.assert_allclose(mixed[:, 10:], sample(field, positions, 2.0)[:, 10:], atol=1e-6)


def test_render_regions_and_coordinates():
    field = small_field(levels=1)
    whole = render(field, level=None)
    assert whole.shape == (32, 48, 3)
    part = render(field, (12, 8), region=(12, 8, 24, 16), level=None)
    np.testing.assert_allclose(part, whole[8:16, 12:24], atol=1e-6)
    np.testing.assert_allclose(to_field(np.array([[0.0, 0.0], [48.0, 32.0]]), 32, 48), [[-1, -2 / 3], [1, 2 / 3]])
    assert region_positions((2, 1), (0, 0, 4, 2)).tolist() == [[[1.0, 1.0], [3.0, 1.0]]]
    with pytest.raises(ValueError, match="region"):
        render(field, region=(5, 0, 5, 10))
    with pytest.raises(ValueError, match="level must be"):
        render(field, level=3.0)


# Fits


def test_a_single_siren_fits_a_smooth_image_above_the_bar():
    image = check_image(smooth_image(32, 32), "smooth", "linear")
    config = ImageFitConfig(levels=1, widths=(64,), steps=300, seed=1, device="cpu")
    field, summary = fit_image(image, config)
    rendered = to_srgb(render(field, level=None))
    assert psnr(rendered, to_srgb(image.pixels)) >= 38.0
    assert summary["stages"][0]["psnr_db"] >= 38.0


def test_mr_net_levels_follow_the_pyramid_coarse_to_fine():
    x = np.arange(64) + 0.5
    fine = 0.12 * np.sin(2 * np.pi * x / 3.0)[None, :, None]  # a period of 3 pixels: gone from level 1 on
    image = check_image(smooth_image(48, 64, seed=3) * 0.8 + fine, "bands", "linear")
    config = ImageFitConfig(levels=3, finest_width=64, min_width=16, hidden_layers=1, steps=200, device="cpu")
    field, summary = fit_image(image, config)
    assert [stage["level"] for stage in summary["stages"]] == [2, 1, 0]
    assert all(stage["psnr_db"] >= 28.0 for stage in summary["stages"])
    pyramid = [to_srgb(level) for level in gaussian_pyramid(image.pixels, 3)]
    for level in (1, 2):  # lambda = N - j reproduces level j, better than the full detail does
        height, width = pyramid[level].shape[:2]
        at_level = evaluate(field, level_centres(48, 64, level), 3 - level).reshape(height, width, 3)
        full = evaluate(field, level_centres(48, 64, level), 3).reshape(height, width, 3)
        assert psnr(at_level, pyramid[level]) > psnr(full, pyramid[level]) + 3.0


def test_tuner_stages_start_and_stay_inside_their_bounds():
    image = check_image(smooth_image(32, 32), "smooth", "linear")
    config = ImageFitConfig(levels=2, finest_width=32, min_width=16, hidden_layers=1, steps=60, tuner=True, device="cpu")
    field, _ = fit_image(image, config)
    for stage in field.stages:
        bounds = stage.tuner_bounds(*config.tuner_bounds)
        weight = stage.hidden[0].linear.weight
        assert bool((weight.abs() <= bounds + 1e-7).all())
        assert stage.first.frequencies.abs().amax(dim=1).le(stage.config.low_limit).float().mean() >= 0.5


def test_integer_frequencies_are_distinct_half_space_axes_first_and_mostly_low():
    k = integer_frequencies(100, 20, low_limit=tuner_low_limit(100), generator=torch.Generator().manual_seed(0))
    assert k[:2].tolist() == [[1, 0], [0, 1]]
    assert len({tuple(row) for row in k.tolist()}) == 100
    assert all(row[0] > 0 or (row[0] == 0 and row[1] > 0) for row in k.tolist())
    assert k.abs().max() <= 20 and k.abs().amax(dim=1).le(tuner_low_limit(100)).float().mean() == pytest.approx(0.7, abs=0.02)
    with pytest.raises(ValueError, match="only 4 distinct"):
        integer_frequencies(5, 1)
    layer = torch.nn.Module()
    layer.linear = torch.nn.Linear(3, 2)
    clamp_columns(layer, torch.tensor([0.1, 1.0, 0.0]))
    assert layer.linear.weight[:, 0].abs().max() <= 0.1 and layer.linear.weight[:, 2].abs().max() == 0


def test_an_image_too_small_for_its_levels_is_refused():
    with pytest.raises(ImageError, match="too small for 5 levels.*at most 3"):
        check_levels(check_image(np.zeros((20, 30, 3), np.uint8)), 5)


# Model files


def test_image_model_files_round_trip(tmp_path):
    field = small_field(levels=2)
    save_image_field(tmp_path / "m.pt", field, {"note": "x"})
    loaded, metadata = load_image_field(tmp_path / "m.pt")
    assert metadata == {"note": "x"} and loaded.levels == 2 and (loaded.width, loaded.height) == (48, 32)
    np.testing.assert_array_equal(render(loaded, level=1.5), render(field, level=1.5))


def _rewrite(path: Path, header_change=None, state_change=None) -> None:
    archive = torch.load(path, weights_only=True)
    header = json.loads(archive["header_json"])
    if header_change:
        header_change(header)
    if state_change:
        state_change(archive["state_dict"])
    torch.save({"header_json": json.dumps(header), "state_dict": archive["state_dict"]}, path)


def test_damaged_or_foreign_model_files_are_refused_before_anything_is_built(tmp_path):
    path = tmp_path / "m.pt"
    save_image_field(path, small_field(levels=2))
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.pt is not a model file written by this engine"):
        load_image_field(tmp_path / "cut.pt")
    cases = {
        "magic": (lambda h: h.update(format="something.else"), None, f"its format is 'something.else', not '{IMAGE_FORMAT}'"),
        "version": (lambda h: h.update(format_version=99), None, "update the engine"),
        "huge": (lambda h: h["stages"][1].update(hidden_features=10**6), None, "1000000 wide"),
        "keys": (lambda h: h.pop("image"), None, "lacks image"),
        "shape": (None, lambda s: s.update({"stages.0.output.bias": torch.zeros(5)}), "has shape"),
        "nan": (None, lambda s: s["stages.1.output.weight"].fill_(float("nan")), "finite"),
    }
    for name, (header_change, state_change, message) in cases.items():
        broken = tmp_path / f"{name}.pt"
        broken.write_bytes(data)
        _rewrite(broken, header_change, state_change)
        with pytest.raises(ValueError, match=message):
            load_image_field(broken)


def test_an_sdf_model_file_is_named_as_such(tmp_path):
    from engine.conventions import Normalization
    from engine.model import SDFModel
    from engine.networks import Siren, SirenConfig

    SDFModel(Siren(SirenConfig(hidden_features=8, hidden_layers=1)), Normalization((0.0, 0.0, 0.0), 1.0)).save(tmp_path / "sdf.pt")
    with pytest.raises(ValueError, match="holds an SDF model"):
        load_image_field(tmp_path / "sdf.pt")
    assert zipfile.is_zipfile(tmp_path / "sdf.pt")


# Command line


def test_cli_fit_then_render_at_a_size_level_and_region(tmp_path, capsys):
    iio.imwrite(tmp_path / "in.png", (to_srgb(smooth_image(32, 40)) * 255).round().astype(np.uint8))
    assert cli.main(["fit", str(tmp_path / "in.png"), "-o", str(tmp_path / "fit"), "--levels", "2", "--steps", "40",
                     "--device", "cpu"]) == 0  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "fit").iterdir()) == ["metrics.json", "model.pt", "render.png"]
    metrics = json.loads((tmp_path / "fit" / "metrics.json").read_text())
    assert metrics["levels"] == 2 and len(metrics["stages"]) == 2 and metrics["psnr_db"] > 15
    assert iio.imread(tmp_path / "fit" / "render.png").shape == (32, 40, 3)
    model = str(tmp_path / "fit" / "model.pt")
    assert cli.main(["render", model, "-o", str(tmp_path / "r.png"), "--size", "20", "16", "--level", "1.5"]) == 0
    assert iio.imread(tmp_path / "r.png").shape == (16, 20, 3)
    assert cli.main(["render", model, "-o", str(tmp_path / "q.jpg"), "--region", "0", "0", "20", "16"]) == 0
    assert iio.imread(tmp_path / "q.jpg").shape == (32, 40, 3)
    assert "rendered" in capsys.readouterr().out


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    (tmp_path / "bad.png").write_text("no")
    iio.imwrite(tmp_path / "ok.png", np.zeros((16, 16, 3), np.uint8))
    cases = [
        (["fit", str(tmp_path / "nope.png"), "-o", str(tmp_path / "o")], "does not exist"),
        (["fit", str(tmp_path / "bad.png"), "-o", str(tmp_path / "o")], "not an image file"),
        (["fit", str(tmp_path / "ok.png"), "-o", str(tmp_path / "o"), "--levels", "6"], "too small for 6 levels"),
        (["fit", str(tmp_path / "ok.png"), "-o", str(tmp_path / "o"), "--steps", "0"], "--steps must be in"),
        (["render", str(tmp_path / "ok.png"), "-o", str(tmp_path / "r.png")], "not a model file"),
    ]
    save_image_field(tmp_path / "m.pt", small_field(levels=2))
    cases += [
        (["render", str(tmp_path / "m.pt"), "-o", str(tmp_path / "r.png"), "--level", "3"], "--level must be in [0, 2]"),
        (["render", str(tmp_path / "m.pt"), "-o", str(tmp_path / "r.tga")], "writes .png"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        error = capsys.readouterr().err.strip()
        assert error.startswith("error: ") and message in error and "\n" not in error, (argv, error)
    if not (Path(cli.__file__).parent / "morph_cli.py").exists():
        assert cli.main(["morph", "a.png", "b.png"]) == 2
        assert "not available" in capsys.readouterr().err
