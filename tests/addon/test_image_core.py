"""The add-on's bpy-free image core (issue 16): colour and pixel layouts held to the engine's own functions, landmark
pairs stored on images, the Image Editor's coordinates and the landmark hit test, aspect refusals held to the
engine's, mip sizes and the output checks."""

from __future__ import annotations

import numpy as np
import pytest

from addon.core import images
from addon.core.errors import EngineError
from engine.images import io as engine_io
from engine.images.landmarks import ImageGeometry
from engine.images.landmarks import check_same_aspect as engine_same_aspect

RNG = np.random.default_rng(0)


def test_the_srgb_functions_are_the_engines():
    values = np.linspace(-0.2, 1.3, 301)
    np.testing.assert_allclose(images.srgb_to_linear(values), engine_io.srgb_to_linear(values), rtol=1e-12)
    np.testing.assert_allclose(images.linear_to_srgb(values), engine_io.linear_to_srgb(values), rtol=1e-12)
    assert images.srgb_to_linear(0.5) == pytest.approx(0.21404114, abs=1e-8)  # the standard's mid grey
    pixels = RNG.random((5, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(images.decoded(pixels), engine_io.to_linear(pixels), atol=1e-7)
    np.testing.assert_allclose(images.encoded(images.decoded(pixels)), pixels, atol=1e-6)
    assert images.encoded(np.full((1, 1, 3), 2.0)).max() == 1.0  # what an 8-bit file can hold


def test_the_encoding_follows_the_buffer_and_the_colour_space():
    assert images.pixel_encoding("A", True, "sRGB") == "linear"  # float buffers are scene linear
    assert images.pixel_encoding("A", False, "sRGB") == "srgb"
    assert images.pixel_encoding("A", False, "Non-Color") == "linear"
    assert images.pixel_encoding("A", False, "Linear Rec.709") == "linear"
    with pytest.raises(EngineError, match="Image 'A' is in the colour space 'AgX Log'.*sRGB.*Non-Color"):
        images.pixel_encoding("A", False, "AgX Log")


def test_blender_pixels_and_engine_pixels_are_inverse_with_rows_flipped():
    height, width = 3, 5
    rgba = RNG.random((height, width, 4)).astype(np.float32)
    flat = rgba[::-1].ravel()  # Blender: the bottom row first
    np.testing.assert_array_equal(images.engine_pixels(flat, width, height, 4), rgba)
    np.testing.assert_array_equal(images.blender_pixels(rgba), flat)
    opaque = rgba.copy()
    opaque[..., 3] = 1.0
    sent = images.engine_pixels(opaque[::-1].ravel(), width, height, 4)
    assert sent.shape == (height, width, 3)  # no alpha channel fitted for an opaque image
    np.testing.assert_array_equal(images.blender_pixels(sent), opaque[::-1].ravel())
    # A float buffer holds colour times alpha: read back straight, written premultiplied; no alpha, no colour.
    straight = rgba.copy()
    straight[0, 0] = (0.7, 0.2, 0.1, 0.0)
    premultiplied = images.blender_pixels(straight, premultiply=True)
    stored = premultiplied.reshape(height, width, 4)[::-1]
    np.testing.assert_allclose(stored[..., :3], straight[..., :3] * straight[..., 3:])
    back = images.engine_pixels(premultiplied, width, height, 4, premultiplied=True)
    np.testing.assert_allclose(back[1:], straight[1:], rtol=1e-5)
    assert back[0, 0].tolist() == [0.0, 0.0, 0.0, 0.0]
    grey = RNG.random((height, width, 1)).astype(np.float32)
    written = images.blender_pixels(grey).reshape(height, width, 4)[::-1]
    np.testing.assert_array_equal(written[..., :3], np.repeat(grey, 3, axis=2))
    assert (written[..., 3] == 1.0).all()


def test_landmarks_stored_on_an_image_read_back_and_bad_ones_read_as_none():
    points = {2: (3.5, 4.0), 1: (10.0, 0.25)}
    stored = images.stored_landmarks(points)
    assert stored == [1.0, 10.0, 0.25, 2.0, 3.5, 4.0]
    assert images.landmark_points(stored) == points
    assert images.landmark_points(None) == {} and images.landmark_points([1.0, 2.0]) == {}
    assert images.landmark_points([1.5, 2.0, 3.0, 4.0, 5.0, 6.0]) == {4: (5.0, 6.0)}  # a broken pair id is left out


def test_the_next_pair_partners_a_waiting_landmark_first():
    assert images.next_pair({}, {}) == 1
    assert images.next_pair({1: (0, 0)}, {}) == 2  # a new pair
    assert images.next_pair({}, {1: (0, 0), 3: (0, 0)}) == 1  # the other image's landmark 1 waits for its partner
    assert images.next_pair({1: (0, 0)}, {1: (0, 0), 3: (0, 0)}) == 3
    assert images.next_pair({1: (0, 0), 3: (0, 0)}, {1: (0, 0), 3: (0, 0)}) == 2  # the smallest free id


def test_pairs_go_to_the_job_in_id_order_and_an_unpaired_landmark_is_refused():
    first = {3: (5.0, 6.0), 1: (1.0, 2.0), 2: (3.0, 4.0)}
    second = {1: (1.5, 2.0), 2: (3.5, 4.0), 3: (5.5, 6.0)}
    inputs = images.paired_landmarks(("A", first), ("B", second))
    np.testing.assert_array_equal(inputs["landmarks_0"], [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(inputs["landmarks_1"], [[1.5, 2], [3.5, 4], [5.5, 6]])
    with pytest.raises(EngineError, match=r"Landmark 4 of image 'B' \(at 7, 8\) has no partner on 'A'"):
        images.paired_landmarks(("A", first), ("B", {**second, 4: (7.0, 8.0)}))
    with pytest.raises(EngineError, match="at least 3 landmark pairs, 'A' and 'B' have 2"):
        images.paired_landmarks(("A", {1: (0, 0), 2: (1, 1)}), ("B", {1: (0, 0), 2: (1, 1)}))


def test_view_and_pixel_coordinates_and_the_hit_test():
    width, height = 40, 20
    assert images.view_to_pixel(0.0, 1.0, width, height) == (0.0, 0.0)  # the top-left corner
    assert images.view_to_pixel(1.0, 0.0, width, height) == (40.0, 20.0)
    assert images.view_to_pixel(0.25, 0.75, width, height) == (10.0, 5.0)
    assert images.view_to_pixel(1.01, 0.5, width, height) is None and images.view_to_pixel(0.5, -0.1, 40, 20) is None
    for x, y in RNG.random((10, 2)) * (width, height):
        assert images.view_to_pixel(*images.pixel_to_view(x, y, width, height), width, height) == pytest.approx((x, y))
    screen = lambda x, y: (100 + 2 * x, 50 + 2 * (height - y))  # noqa: E731  (a view zoomed 2x, y up)
    points = {1: (10.0, 5.0), 2: (12.0, 5.0)}
    assert images.nearest_landmark(points, screen, (121.0, 80.0), 12.0) == 1  # 1 px from 1, 3 px from 2
    assert images.nearest_landmark(points, screen, (125.0, 80.0), 12.0) == 2
    assert images.nearest_landmark(points, screen, (200.0, 80.0), 12.0) is None


@pytest.mark.parametrize(
    ("first", "second"),
    [((32, 24), (64, 48)), ((128, 96), (129, 96)), ((32, 24), (24, 24)), ((100, 50), (100, 52)), ((48, 64), (64, 48))],
)
def test_the_aspect_check_is_the_engines(first, second):
    try:
        engine_same_aspect(ImageGeometry(*first), ImageGeometry(*second))
        engine_accepts = True
    except ValueError:
        engine_accepts = False
    if engine_accepts:
        images.check_same_aspect(("A", *first), ("B", *second))
    else:
        with pytest.raises(EngineError, match="same aspect. Crop '.' to the aspect of '.'"):
            images.check_same_aspect(("A", *first), ("B", *second))


def test_image_sizes_mips_and_outputs():
    with pytest.raises(EngineError, match="has no pixels"):
        images.check_image_size("A", 0, 0)
    with pytest.raises(EngineError, match="4x16 pixels: both sides must be at least 8"):
        images.check_image_size("A", 4, 16)
    assert images.mip_sizes(32, 24, 3) == [(16, 12), (8, 6), (4, 3)]
    assert images.mip_sizes(4, 2, 5) == [(2, 1), (1, 1)]
    good = np.zeros((6, 8, 3), np.float32)
    assert images.output_image({"render": good}, "render", (8, 6)).shape == (6, 8, 3)
    for outputs, message in [
        ({}, "no 'render' image"),
        ({"render": np.zeros((6, 8))}, "shape"),
        ({"render": good}, "expected 9x6"),
        ({"render": np.full((6, 8, 3), np.nan, np.float32)}, "NaN"),
    ]:
        with pytest.raises(EngineError, match=message):
            images.output_image(outputs, "render", (9, 6) if message == "expected 9x6" else None)


def test_two_images_go_to_one_job_in_one_encoding():
    srgb, linear = RNG.random((4, 4, 3)).astype(np.float32), RNG.random((4, 4, 3)).astype(np.float32)
    first, second, encoding = images.one_encoding((srgb, "srgb"), (srgb, "srgb"))
    assert encoding == "srgb" and first is srgb
    first, second, encoding = images.one_encoding((srgb, "srgb"), (linear, "linear"))
    assert encoding == "linear" and second is linear
    np.testing.assert_allclose(first, engine_io.to_linear(srgb), atol=1e-7)
