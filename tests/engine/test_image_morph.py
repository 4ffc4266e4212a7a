"""Image morph (issue 16): the warp T(x, t) = x + t w(x, t) is the identity at t = 0, an affine pair is recovered
(exactly with the affine group, inside the landmarks by the learned part alone), the warp is inverse consistent and
does not fold, frames 0 and 1 are the images bit for bit, a saved morph renders the same frames, and bad landmark
files, images and model files are refused with the pair or the file named. Tiny sizes (64 x 48, a few hundred steps).
"""

import dataclasses
import json
import re

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from scipy.spatial import Delaunay

from engine.images import morph_cli
from engine.images.io import check_image, read_image, to_srgb
from engine.images.morph import (
    IMAGE_MORPH_KEY,
    ImageGeometry,
    ImageMorph,
    ImageWarp,
    affine_fit,
    affine_logarithm,
    check_landmarks,
    flipped_triangles,
    load_image_morph,
    preset,
    read_landmarks,
    train_image_morph,
    warp_report,
)
from engine.images.morph_frames import render_frames
from engine.morph.warp_field import smoothness_terms, transform
from engine.networks import Siren, SirenConfig
from engine.training import Cancelled

WIDTH, HEIGHT = 64, 48
"""Non-square on purpose: the morph coordinates are scaled by the long side."""
GEOMETRY = ImageGeometry(WIDTH, HEIGHT)
TURN = np.deg2rad(6.0)
LINEAR = 0.93 * np.array([[np.cos(TURN), -np.sin(TURN)], [np.sin(TURN), np.cos(TURN)]]) @ [[1.0, 0.08], [0.0, 1.04]]
OFFSET = np.array([WIDTH, HEIGHT]) / 2 - LINEAR @ (np.array([WIDTH, HEIGHT]) / 2) + [2.0, -1.5]
"""The known map, in pixels: x -> LINEAR x + OFFSET (a turn of 6 degrees, a shear, a scale, a shift)."""
SMALL = dataclasses.replace(preset("cpu", device="cpu"), batch=1000, smoothness_batch=500)


def known_map(points):
    return np.asarray(points) @ LINEAR.T + OFFSET


def pixel_centres(geometry=GEOMETRY):
    xs, ys = np.meshgrid(np.arange(geometry.width) + 0.5, np.arange(geometry.height) + 0.5)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


@pytest.fixture(scope="module")
def landmarks():
    sources = np.random.default_rng(1).uniform([0.1 * WIDTH, 0.1 * HEIGHT], [0.9 * WIDTH, 0.9 * HEIGHT], (20, 2))
    return sources, known_map(sources)


@pytest.fixture(scope="module")
def affine_morph(landmarks):
    return train_image_morph((GEOMETRY, GEOMETRY), landmarks, dataclasses.replace(SMALL, steps=150))


def random_pixels(seed, channels=3):
    shape = (HEIGHT, WIDTH, channels) if channels > 1 else (HEIGHT, WIDTH)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def images():
    return check_image(random_pixels(0), "first"), check_image(random_pixels(1), "second")


def small_warp(seed=0, logarithm=None, omega=10.0):
    torch.manual_seed(seed)
    config = SirenConfig(hidden_features=16, hidden_layers=1, first_omega=omega, hidden_omega=omega, in_features=3,
                         out_features=2)  # fmt: skip
    return ImageWarp(Siren(config), logarithm)


def test_the_warp_is_exactly_the_identity_at_time_zero():
    warp = small_warp(logarithm=[[0.1, -0.2, 0.05], [0.2, 0.05, -0.1]])
    points = torch.rand(500, 2) * 2 - 1
    assert torch.equal(transform(warp, points, 0.0), points)
    assert torch.equal(transform(warp, points, torch.zeros(500)), points)
    assert not torch.allclose(transform(warp, points, 0.5), points)
    morph = ImageMorph(warp, (GEOMETRY, GEOMETRY))
    grid = GEOMETRY.to_morph(pixel_centres())
    np.testing.assert_array_equal(morph.transform(grid, 0.0), grid)
    np.testing.assert_array_equal(morph.displacement(grid, -0.0), np.zeros_like(grid))


def test_the_affine_group_meets_the_consistency_terms_exactly(landmarks):
    """T(x, t) = H^t x: T(., 1) is H, T(., -t) inverts T(., t) and T(T(x, t), 1 - t) = T(x, 1) (float32 accuracy)."""
    sources, targets = landmarks
    affine = affine_fit(GEOMETRY.to_morph(sources), GEOMETRY.to_morph(targets))
    warp = ImageWarp(Siren(SMALL.warp).zero_output(), affine_logarithm(affine))
    points = torch.rand(1000, 2) * 2 - 1
    expected = points.double() @ torch.from_numpy(affine[:2, :2]).T + torch.from_numpy(affine[:2, 2])
    torch.testing.assert_close(transform(warp, points, 1.0).double(), expected, atol=2e-6, rtol=0)
    for t in (-1.0, -0.4, 0.3, 0.8):
        torch.testing.assert_close(transform(warp, transform(warp, points, t), -t), points, atol=2e-6, rtol=0)
        if t > 0:
            onward = transform(warp, transform(warp, points, t), 1.0 - t)
            torch.testing.assert_close(onward, transform(warp, points, 1.0), atol=2e-6, rtol=0)


@pytest.mark.parametrize("in_time", [True, False])
def test_the_thin_plate_estimate_is_the_mean_square_hessian(in_time):
    """The shared estimate (engine.morph.warp_field, generalised from the 3D morph) against the exact Hessian of
    u = t w: |Hess u|^2 / k, k = 3 variables (u, v, t) or 2 (u, v)."""
    warp = small_warp(seed=3, omega=3.0).network
    torch.manual_seed(1)
    points, times = torch.rand(4, 2) * 1.6 - 0.8, torch.rand(4) * 1.6 - 0.8

    def displacement(z):
        return z[2] * warp(z.unsqueeze(0))[0]

    exact = []
    for z in torch.cat([points, times.unsqueeze(-1)], dim=1).double():
        per_output = [torch.autograd.functional.hessian(lambda y, k=k: displacement(y.float())[k].double(), z)
                      for k in range(2)]  # fmt: skip
        block = torch.stack(per_output)
        exact.append((block if in_time else block[:, :2, :2]).square().sum())
    variables = 3 if in_time else 2
    wanted = torch.stack(exact).mean().item() / variables
    repeats = 5000
    directions = torch.randn(4 * repeats, variables)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    estimate, _, _ = smoothness_terms(warp, points.repeat(repeats, 1), times.repeat(repeats), directions, 1e-3)
    assert estimate.item() == pytest.approx(wanted, rel=0.05)


def test_an_affine_pair_is_recovered_with_the_affine_group(affine_morph):
    """The group of the landmarks' affine fit is the answer: training keeps it (measured 0.001 px max over the
    whole 64 x 48 image after 150 steps); 0.05 px allowed."""
    grid = pixel_centres()
    moved = GEOMETRY.to_pixels(affine_morph.transform(GEOMETRY.to_morph(grid), 1.0))
    error = np.linalg.norm(moved - known_map(grid), axis=1)
    assert error.max() < 0.05, f"|T(x, 1) - A x|: mean {error.mean():.4f} px, max {error.max():.4f} px"
    report = affine_morph.metadata[IMAGE_MORPH_KEY]["report"]
    assert report["landmark_error_px"]["forward_max"] < 0.05 and report["landmark_error_px"]["backward_max"] < 0.05
    assert report["inverse_error_px"]["max"] < 0.05 and report["path_error_px"]["max"] < 0.05
    assert not report["folds"] and report["min_det"] > 0.5  # det A = 0.90; det of T(., -1) = 1 / 0.90


def test_the_learned_warp_alone_recovers_an_affine_pair_inside_the_landmarks(landmarks):
    """Without the affine group (ifmorph's start) the SIREN learns the map: inside the landmarks' hull 0.07 px mean,
    0.24 px max measured at 64 x 48 after 300 steps (0.5 px allowed); outside it nothing pins the warp (4.8 px at
    the corners), which is why the product adds the affine group."""
    sources, _ = landmarks
    morph = train_image_morph((GEOMETRY, GEOMETRY), landmarks, dataclasses.replace(SMALL, steps=300, init="identity"))
    assert morph.metadata[IMAGE_MORPH_KEY]["start"] == "identity" and not morph.warp.coefficients.numel()
    grid = pixel_centres()
    inside = grid[Delaunay(sources).find_simplex(grid) >= 0]
    moved = GEOMETRY.to_pixels(morph.transform(GEOMETRY.to_morph(inside), 1.0))
    error = np.linalg.norm(moved - known_map(inside), axis=1)
    assert error.max() < 0.5, f"inside the landmarks: mean {error.mean():.3f} px, max {error.max():.3f} px"
    report = morph.metadata[IMAGE_MORPH_KEY]["report"]
    assert report["landmark_error_px"]["forward_max"] < 0.1
    assert report["inverse_error_px"]["mean"] < 0.2  # 0.06 px measured, over the whole image and t = +-1/4 ... +-1
    assert not report["folds"] and report["min_det"] > 0


def eight_bit(linear):
    return np.round(np.clip(to_srgb(linear), 0, 1) * 255).astype(np.uint8)


def test_frames_end_exactly_on_the_images(affine_morph, images):
    """Linear blend: the end frames are the images' arrays bit for bit. sRGB blend: they pass through the encoding
    and back (1 ulp in float32), and are the images bit for bit in the 8-bit files written."""
    first, middle, last = render_frames(affine_morph, *images, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(first, images[0].pixels)
    np.testing.assert_array_equal(last, images[1].pixels)
    assert first.shape == middle.shape == (HEIGHT, WIDTH, 3)
    assert not np.array_equal(middle, first) and not np.array_equal(middle, last)
    first, middle, last = render_frames(affine_morph, *images, [0.0, 0.5, 1.0], blend="srgb")
    np.testing.assert_array_equal(eight_bit(first), random_pixels(0))
    np.testing.assert_array_equal(eight_bit(last), random_pixels(1))
    assert np.abs(first - images[0].pixels).max() < 1e-6


def test_frames_of_images_at_other_resolutions(affine_morph, images):
    """Image 1 at twice the size (same aspect): frame 0 is still image 0 exactly, the last frame image 1 resampled;
    frames render at any size of the aspect, and other aspects are refused."""
    big = check_image(np.repeat(np.repeat(random_pixels(1), 2, 0), 2, 1), "big")
    first, last = render_frames(affine_morph, images[0], big, [0.0, 1.0])
    np.testing.assert_array_equal(first, images[0].pixels)
    assert np.abs(last - images[1].pixels).max() < 0.01
    half = render_frames(affine_morph, *images, [0.5], size=(32, 24))[0]
    assert half.shape == (24, 32, 3)
    with pytest.raises(ValueError, match="same aspect"):
        render_frames(affine_morph, *images, [0.5], size=(32, 32))
    with pytest.raises(ValueError, match=r"frame times must lie in \[0, 1\]"):
        render_frames(affine_morph, *images, [1.5])


def test_a_saved_morph_gives_the_same_warp_and_frames(affine_morph, images, tmp_path):
    affine_morph.save(tmp_path / "morph.pt")
    loaded = load_image_morph(tmp_path / "morph.pt")
    grid = GEOMETRY.to_morph(pixel_centres())
    for t in (-1.0, 0.3, 1.0):
        np.testing.assert_array_equal(loaded.transform(grid, t), affine_morph.transform(grid, t))
    times = [0.0, 0.4, 1.0]
    for again, frame in zip(render_frames(loaded, *images, times), render_frames(affine_morph, *images, times)):
        np.testing.assert_array_equal(again, frame)
    assert loaded.metadata[IMAGE_MORPH_KEY]["images"][0] == {"name": "image 0", "width": WIDTH, "height": HEIGHT}


def test_bad_model_files_are_refused(affine_morph, tmp_path):
    from engine.morph import load_morph

    affine_morph.save(tmp_path / "morph.pt")
    with pytest.raises(ValueError, match="holds an image morph, not a morph; load it with engine.images.morph"):
        load_morph(tmp_path / "morph.pt")
    archive = torch.load(tmp_path / "morph.pt", weights_only=True)
    for change, message in [
        (lambda info: info.update(affine_logarithm=[[1.0, 2.0], [3.0, 4.0]]), "affine_logarithm must be 2 rows"),
        (lambda info: info.update(affine_logarithm=[[50.0, 0, 0], [0, 0, 0]]), "affine_logarithm is larger"),
        (lambda info: info["images"][1].update(width=-3), r"image 1 of its morph has size \[-3, 48\]"),
        (lambda info: info.pop("images"), "must name two images"),
    ]:
        header = json.loads(archive["header_json"])
        change(header["metadata"][IMAGE_MORPH_KEY])
        torch.save({**archive, "header_json": json.dumps(header)}, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match=message):
            load_image_morph(tmp_path / "bad.pt")


def test_a_folding_warp_is_reported():
    warp = small_warp(seed=2)
    with torch.no_grad():
        warp.network.output.weight.mul_(300.0)  # a wild displacement: T(., t) folds
    report = warp_report(ImageMorph(warp, (GEOMETRY, GEOMETRY)), resolution=32)
    assert report["folds"] and report["min_det"] < 0 and report["folded_points"] > 0
    assert set(report["min_det_at"]) == {"time", "pixel"} and "landmark_error_px" not in report


def test_cancelling_stops_the_training(landmarks):
    calls = []

    def cancel_on_third_check():
        calls.append(1)
        return len(calls) >= 3

    with pytest.raises(Cancelled, match="step 2 of"):
        train_image_morph((GEOMETRY, GEOMETRY), landmarks, SMALL, should_cancel=cancel_on_third_check)


GOOD = [[[10, 10], [12, 11]], [[50, 12], [49, 14]], [[30, 40], [31, 38]], [[20, 30], [22, 30]]]


@pytest.mark.parametrize(
    "content, message",
    [
        ("[[[1, 2], [3, 4]]", "is not JSON"),
        (json.dumps({"pairs": GOOD}), "must be a JSON list of pairs .* got a JSON object"),
        (json.dumps(GOOD[:1] + [[[5, 6]]] + GOOD[1:]), r"pair 1 is \[\[5, 6\]\] \(1 entry\)"),
        (json.dumps(GOOD[:2] + [[5, 6]] + GOOD[2:]), r"pair 2 is one point \[5, 6\], not a pair"),
        (json.dumps(GOOD + [[[1, 2, 3], [4, 5]]]), r"pair 4: its point in image 0 must be \[x, y\]"),
        (json.dumps(GOOD + [[[1, 2], [True, 5]]]), r"pair 4: its point in image 1 must be \[x, y\], two numbers"),
        (json.dumps(GOOD[:2] + [[[3, 3], [float("nan"), 3]]] + GOOD[2:]), "pair 2: its point in image 1 .* not finite"),
        (json.dumps(GOOD[:3] + [[[70, 10], [10, 10]]]), r"pair 3: its point \(70, 10\) lies outside image 0"),
        (json.dumps([[[10, 10], [10, -0.5]]] + GOOD), r"pair 0: its point \(10, -0.5\) lies outside image 1"),
        (json.dumps(GOOD[:2]), "holds 2 landmark pairs; a morph needs at least 3"),
        (json.dumps([[[10, 10], [11, 11]], [[20, 20], [21, 22]], [[30, 30], [31, 29]]]), "image 0 lies on one line"),
        (json.dumps([[[x, y], [WIDTH - x, y]] for (x, y), _ in GOOD]), "the pairs mirror the image"),
        (json.dumps(GOOD + [[[50, 12], [40, 40]]]), r"pairs 1 and 4 start from the same point \[50.0, 12.0\] of image 0"),
        (json.dumps(GOOD + [[[40, 40], [49, 14]]]), r"pairs 1 and 4 start from the same point \[49.0, 14.0\] of image 1"),
        ("\x80\x81", "is not a text file"),
    ],
)
def test_bad_landmark_files_are_refused_with_the_pair_named(tmp_path, content, message):
    path = tmp_path / "pairs.json"
    path.write_bytes(content.encode("latin-1") if content.startswith("\x80") else content.encode())
    with pytest.raises(ValueError, match=message):
        read_landmarks(path, GEOMETRY, GEOMETRY)
    assert check_landmarks(GOOD, GEOMETRY, GEOMETRY)[0].shape == (4, 2)


def test_landmark_triangles_that_turn_the_other_way_are_named():
    """Pair 3 moved across the line of pairs 1 and 2: the triangle (1, 2, 3) flips (a warning: the warp must swirl or
    fold there), the others keep their turn."""
    assert flipped_triangles(*check_landmarks(GOOD, GEOMETRY, GEOMETRY)) == []
    crossed = GOOD[:3] + [[[20, 30], [40, 30]]]
    assert flipped_triangles(*check_landmarks(crossed, GEOMETRY, GEOMETRY)) == [(1, 2, 3)]


def test_missing_files_and_other_aspects_are_refused(tmp_path, landmarks):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_landmarks(tmp_path / "none.json", GEOMETRY, GEOMETRY)
    with pytest.raises(ValueError, match="same aspect"):
        train_image_morph((GEOMETRY, ImageGeometry(64, 64)), landmarks, SMALL)
    # A copy at another resolution of the same aspect (within a pixel) is fine.
    bigger = (landmarks[0], landmarks[1] * 2.0)
    train_image_morph((GEOMETRY, ImageGeometry(129, 96)), bigger, dataclasses.replace(SMALL, steps=1))


def write_png(path, pixels):
    iio.imwrite(path, pixels)
    return path


def run_cli(argv, capsys):
    code = morph_cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_command_line_writes_frames_times_and_a_morph_that_renders_them_again(tmp_path, capsys, landmarks):
    first = write_png(tmp_path / "a.png", random_pixels(5))
    second = write_png(tmp_path / "b.png", random_pixels(6, channels=1))  # grey
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([[list(p), list(q)] for p, q in zip(*landmarks)]))
    out = tmp_path / "out"
    code, stdout, stderr = run_cli([first, second, "--landmarks", pairs, "-o", out, "--frames", 4, "--steps", 20], capsys)
    assert code == 0 and "wrote 4 frames, times.json and morph.pt" in stdout and "warning" not in stderr
    summary = json.loads((out / "times.json").read_text())
    assert summary["times"] == pytest.approx([0, 1 / 3, 2 / 3, 1]) and summary["frames"][-1] == "frame_0003.png"
    assert summary["model"] == "morph.pt" and summary["size"] == [WIDTH, HEIGHT] and summary["folds"] is False
    assert summary["quality"]["landmark_error_px"]["forward_max"] < 0.5
    frames = [read_image(out / name) for name in summary["frames"]]
    np.testing.assert_array_equal(iio.imread(out / "frame_0000.png"), iio.imread(first))
    np.testing.assert_array_equal(iio.imread(out / "frame_0003.png"), np.repeat(iio.imread(second)[..., None], 3, 2))

    again = tmp_path / "again"
    code, stdout, _ = run_cli([first, second, "--render-only", out / "morph.pt", "-o", again, "--frames", 4], capsys)
    assert code == 0 and "morph.pt" not in stdout and not (again / "morph.pt").exists()
    for name, frame in zip(summary["frames"], frames):
        np.testing.assert_array_equal(read_image(again / name).pixels, frame.pixels)
    small = tmp_path / "small"
    code, _, _ = run_cli([first, second, "--render-only", out / "morph.pt", "-o", small, "--size", 32, 24], capsys)
    assert code == 0 and read_image(small / "frame_0004.png").pixels.shape == (24, 32, 3)


def test_the_command_line_refuses_bad_input_before_any_work(tmp_path, capsys, landmarks):
    first = write_png(tmp_path / "a.png", random_pixels(5))
    square = write_png(tmp_path / "square.png", random_pixels(6)[:, :48])
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps(GOOD[:1] + [[[5, 6]]]))
    out = tmp_path / "out"
    cases = [
        ([first, first, "--landmarks", pairs], r"pair 1 is \[\[5, 6\]\] \(1 entry\)"),
        ([first, square, "--landmarks", pairs], "same aspect"),
        ([first, tmp_path / "none.png", "--landmarks", pairs], "does not exist"),
        ([first, pairs, "--landmarks", pairs], "not an image file"),
        ([first, first, "--landmarks", pairs, "--frames", 1], r"--frames must be in \[2, 1000\]"),
        ([first, first, "--render-only", pairs], "is not a model file written by this engine"),
        ([first, first, "--landmarks", pairs, "--size", 30, 30], "same aspect"),
    ]
    for argv, message in cases:
        code, _, stderr = run_cli([*argv, "-o", out], capsys)
        assert code == 2 and stderr.startswith("error: "), (argv, stderr)
        assert re.search(message, stderr), (message, stderr)
        assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def test_the_command_line_says_when_the_warp_folds(tmp_path, capsys, monkeypatch, landmarks):
    """A folding warp: the frames and the report are written (to see it), the exit code is 1 and stderr says where."""
    import engine.images.morph as image_morph

    def folding(geometries, pairs, config, **_):
        warp = small_warp(seed=2)
        with torch.no_grad():
            warp.network.output.weight.mul_(300.0)
        morph = ImageMorph(warp, geometries, {IMAGE_MORPH_KEY: {"landmarks": {"image0": pairs[0].tolist(),
                                                                               "image1": pairs[1].tolist()}}})
        morph.metadata[IMAGE_MORPH_KEY].update(train_seconds=0.0, report=warp_report(morph, resolution=32))
        return morph

    monkeypatch.setattr(image_morph, "train_image_morph", folding)
    first = write_png(tmp_path / "a.png", random_pixels(5))
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps(GOOD[:3] + [[[20, 30], [40, 30]]]))  # the triangle (1, 2, 3) flips
    code, _, stderr = run_cli([first, first, "--landmarks", pairs, "-o", tmp_path / "out", "--frames", 2], capsys)
    assert "warning: 1 landmark triangle (pairs (1, 2, 3)) turns the other way in image 1" in stderr
    assert code == 1 and "error: the warp folds: det dT/dx = -" in stderr
    summary = json.loads((tmp_path / "out" / "times.json").read_text())
    assert summary["folds"] is True and (tmp_path / "out" / "frame_0001.png").exists()
