"""The image job kinds (issue 16): image_fit, image_render, image_tile and image_morph through the real worker, the
command line giving the same results, bad parameters and inputs refused with what is wrong, cancel."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest

from engine import protocol
from engine.images.files import load_image_field
from engine.images.io import check_image, srgb_to_linear, to_srgb
from engine.images.morph import load_image_morph
from engine.images.tile import is_periodic
from engine.jobs import JOBS, JobContext, JobParamError
from engine.jobs.image_morph import ImageMorphJob
from engine.jobs.images import ImageFitJob, ImageRenderJob, ImageTileJob
from tests.engine.test_worker import WorkerUnderTest, job

WIDTH, HEIGHT = 32, 24
LANDMARKS = np.array([[6.0, 5.0], [26.0, 6.0], [16.0, 19.0], [8.0, 18.0]])
SHIFT = np.array([1.5, -1.0])
"""Image 1 is image 0 moved by this many pixels: the landmarks of image 1 are those of image 0 plus it."""


def smooth_image(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Linear-light RGB (height, width, 3) float32 of low frequencies."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [0.5 + 0.4 * np.sin(3 * x + 1), 0.5 + 0.3 * np.cos(4 * y), 0.4 + 0.3 * np.sin(2 * x + 3 * y)]
    return np.stack(channels, axis=2).astype(np.float32)


class Jobs:
    """Jobs through one real worker, each in its own folder."""

    def __init__(self, root):
        self.root, self.worker, self.count = root, WorkerUnderTest(), 0
        root.mkdir()
        assert self.worker.next()["type"] == "hello"

    def send(self, kind: str, params: dict, inputs: dict | None = None):
        self.count += 1
        directory = self.root / f"{kind}_{self.count}"
        directory.mkdir()
        if inputs:
            np.savez(directory / protocol.INPUTS_FILENAME, **inputs)
        self.worker.send(job(str(self.count), kind, directory, **params))
        return str(self.count), directory

    def run(self, kind: str, params: dict, inputs: dict | None = None) -> tuple[dict, dict, list, object]:
        job_id, directory = self.send(kind, params, inputs)
        end, progress = self.worker.until_end_of_job(job_id)
        assert end["type"] == "result", end
        with np.load(directory / end["outputs"], allow_pickle=False) as outputs:
            arrays = {name: outputs[name] for name in outputs.files}
        return arrays, end, progress, directory


@pytest.fixture
def jobs(tmp_path):
    runner = Jobs(tmp_path / "worker")
    yield runner
    runner.worker.close()


def test_fit_render_tile_and_morph_through_the_worker(jobs, tmp_path):
    image = smooth_image()
    common = {"device": "cpu", "seed": 1}
    fit = {"name": "Smooth", "levels": 2, "steps": 30, **common}
    arrays, end, progress, folder = jobs.run("image_fit", fit, {"image": image})
    assert arrays["render"].shape == (HEIGHT, WIDTH, 3) and arrays["render"].dtype == np.float32
    assert end["files"] == {"model": "model.pt"} and end["summary"]["psnr_db"] > 20
    assert end["summary"]["source"] == "Smooth" and end["summary"]["size"] == [WIDTH, HEIGHT]
    steps = [p["step"] for p in progress if p["stage"] == "fit"]
    assert steps == sorted(steps) and steps[0] == 0 and progress[-1]["stage"] == "render"
    model = folder / "model.pt"
    field, metadata = load_image_field(model)
    assert field.levels == 2 and metadata["image_fit"]["summary"]["source"] == "Smooth"

    # The same job from the command line: the same render (8-bit), the same report.
    from engine.images import cli

    iio.imwrite(tmp_path / "in.png", np.round(to_srgb(image) * 255).astype(np.uint8))
    arrays_8bit, end_8bit, _, _ = jobs.run(
        "image_fit", {**fit, "name": "in.png", "encoding": "srgb"}, {"image": iio.imread(tmp_path / "in.png") / 255.0}
    )
    assert cli.main(["fit", str(tmp_path / "in.png"), "-o", str(tmp_path / "fit"), "--levels", "2", "--steps", "30",
                     "--device", "cpu", "--seed", "1"]) == 0  # fmt: skip
    written = iio.imread(tmp_path / "fit" / "render.png").astype(int)
    assert np.abs(written - np.round(to_srgb(arrays_8bit["render"]).clip(0, 1) * 255)).max() <= 1
    report = json.loads((tmp_path / "fit" / "metrics.json").read_text())
    assert report["psnr_db"] == pytest.approx(end_8bit["summary"]["psnr_db"], abs=0.05)

    render = {"model": str(model), "size": [16, 12], "detail": "level", "level": 1.5, "device": "cpu"}
    arrays, end, _, _ = jobs.run("image_render", render)
    assert arrays["render"].shape == (12, 16, 3) and end["summary"]["level"] == 1.5 and end["files"] == {}
    arrays, end, _, _ = jobs.run("image_render", {"model": str(model), "region": [0, 0, 16, 12], "device": "cpu"})
    assert arrays["render"].shape == (HEIGHT, WIDTH, 3) and end["summary"]["level"] == "auto"

    tile = {"name": "Smooth", "steps": 10, "train_size": 32, "size": 64, **common}
    arrays, end, _, folder = jobs.run("image_tile", tile, {"image": image})
    assert arrays["tile"].shape == (48, 64, 3) and end["summary"]["size"] == [64, 48]
    assert is_periodic(load_image_field(folder / "model.pt")[0])
    assert {"seam_score", "seam_score_photo", "psnr_inside_db", "periodicity_error"} <= set(end["summary"])

    moved = np.roll(image, (-1, 2), axis=(0, 1))
    morph = {"names": ["A", "B"], "frames": 3, "steps": 5, **common}
    inputs = {"image_0": image, "image_1": moved, "landmarks_0": LANDMARKS, "landmarks_1": LANDMARKS + SHIFT}
    arrays, end, progress, folder = jobs.run("image_morph", morph, inputs)
    assert arrays["times"].tolist() == [0.0, 0.5, 1.0] and end["files"] == {"model": "morph.pt"}
    np.testing.assert_array_equal(arrays["frame_0"], image)  # frame 0 is image 0 exactly, frame 1 image 1
    np.testing.assert_array_equal(arrays["frame_2"], moved)
    assert [p["step"] for p in progress if p["stage"] == "frames"] == [0, 1, 2, 3]
    summary = end["summary"]
    assert summary["landmark_pairs"] == 4 and summary["warnings"] == [] and summary["folds"] is False
    again = {"names": ["A", "B"], "frames": 2, "size": [16, 12], "model": str(folder / "morph.pt"), "device": "cpu"}
    arrays, end, _, _ = jobs.run("image_morph", again, {"image_0": image, "image_1": moved})
    assert arrays["frame_1"].shape == (12, 16, 3) and end["files"] == {} and end["summary"]["train_seconds"] is None
    assert load_image_morph(folder / "morph.pt").geometries[0].width == WIDTH


def test_a_cancel_stops_an_image_job_and_nothing_is_written(jobs):
    job_id, directory = jobs.send("image_tile", {"steps": 100_000, "train_size": 32, "device": "cpu"},
                                  {"image": smooth_image()})  # fmt: skip
    while (message := jobs.worker.next())["type"] == "progress" and message["step"] == 0:
        pass
    assert message["type"] == "progress", message
    jobs.worker.send({"type": "cancel", "job": job_id})
    end, _ = jobs.worker.until_end_of_job(job_id)
    assert end["type"] == "cancelled" and "cancelled at step" in end["message"]
    assert not (directory / protocol.OUTPUTS_FILENAME).exists() and not (directory / "model.pt").exists()


def test_bad_inputs_are_refused_by_the_worker_with_what_is_wrong(jobs):
    cases = [
        ("image_fit", {"levels": 0}, {"image": smooth_image()}, "parameter 'levels' must be at least 1, got 0"),
        ("image_fit", {"levels": 4, "name": "Tiny"}, {"image": smooth_image(16, 8)}, "Tiny is 16x8: too small for 4"),
        ("image_fit", {"encoding": "srgb", "name": "Bright"}, {"image": smooth_image() * 3}, "Bright holds values"),
        ("image_fit", {}, {"picture": smooth_image()}, "no array 'image'"),
        ("image_render", {"model": "/no/such/model.pt"}, None, "does not exist"),
        ("image_morph", {"names": ["A", "B"]},
         {"image_0": smooth_image(), "image_1": smooth_image(32, 32), "landmarks_0": LANDMARKS,
          "landmarks_1": LANDMARKS}, "A is 32x24 pixels .* and B 32x32 .* same aspect"),
        ("image_morph", {},
         {"image_0": smooth_image(), "image_1": smooth_image(), "landmarks_0": LANDMARKS,
          "landmarks_1": LANDMARKS[:3]}, "landmarks_0 has 4 points and landmarks_1 3: every landmark"),
        ("image_morph", {},
         {"image_0": smooth_image(), "image_1": smooth_image(), "landmarks_0": LANDMARKS,
          "landmarks_1": LANDMARKS + [40.0, 0.0]}, "landmarks: .*outside"),
    ]  # fmt: skip
    import re

    for kind, params, inputs, message in cases:
        job_id, _ = jobs.send(kind, {"device": "cpu", **params}, inputs)
        end, _ = jobs.worker.until_end_of_job(job_id)
        assert end["type"] == "error" and re.search(message, end["message"]), (kind, params, end)


@pytest.mark.parametrize(
    ("kind", "params", "param", "problem"),
    [
        ("image_fit", {"levels": 13}, "levels", "must be at most 12"),
        ("image_fit", {"steps": 0}, "steps", "must be at least 1, got 0"),
        ("image_fit", {"preset": "tiny"}, "preset", "must be one of 'fast', 'quality', 'gpu'"),
        ("image_fit", {"encoding": "rec709"}, "encoding", "must be one of 'linear', 'srgb'"),
        ("image_render", {}, "model", "is missing"),
        ("image_render", {"model": "m.pt", "detail": "level"}, "level", "is missing"),
        ("image_render", {"model": "m.pt", "level": 1.0}, "level", "is for detail 'level' only"),
        ("image_render", {"model": "m.pt", "size": [0, 10]}, "size", "must be a width and a height in [1, 65536]"),
        ("image_render", {"model": "m.pt", "region": [5, 0, 1, 4]}, "region", "x1 > x0"),
        ("image_tile", {"size": 4}, "size", "must be at least 8, got 4"),
        ("image_tile", {"train_size": 10_000}, "train_size", "must be at most 8192"),
        ("image_morph", {"frames": 1}, "frames", "must be at least 2, got 1"),
        ("image_morph", {"model": "m.pt", "steps": 3}, "steps", "does not train"),
        ("image_morph", {"size": [0, 4]}, "size", "must be two sides in [1, 16384]"),
        ("image_morph", {"names": ["A"]}, "names", "must be a list of 2 values"),
    ],
)
def test_a_bad_parameter_is_named_with_what_is_wrong(kind, params, param, problem):
    with pytest.raises(JobParamError) as raised:
        JOBS[kind].from_params(params)
    assert raised.value.param == param and problem in raised.value.problem, raised.value


def test_the_specs_read_back_their_own_params_and_are_registered():
    for spec in (ImageFitJob(levels=2, fit_space="linear"), ImageTileJob(size=64),
                 ImageRenderJob(model="m.pt", size=(4, 3), region=(0, 0, 1, 1)),
                 ImageMorphJob(names=("a", "b"), size=(8, 6), model="m.pt")):  # fmt: skip
        assert JOBS[spec.kind] is type(spec)
        assert type(spec).from_params(json.loads(json.dumps(spec.to_params()))) == spec
    assert protocol.MODEL_FILE_PARAMS["image_render"] == ("model",) == protocol.MODEL_FILE_PARAMS["image_morph"]


def test_srgb_inputs_are_decoded_and_linear_ones_taken_as_they_are(tmp_path):
    """A job given sRGB-encoded values fits what it fits given their linear-light decoding (one encoding in the
    engine, whatever the front end sends)."""
    encoded = to_srgb(smooth_image())
    context = JobContext(output_dir=tmp_path)
    spec = dict(levels=1, steps=5, device="cpu")
    from_srgb = ImageFitJob(encoding="srgb", **spec).run({"image": encoded}, context).arrays["render"]
    linear = srgb_to_linear(encoded)
    from_linear = ImageFitJob(encoding="linear", **spec).run({"image": linear}, context).arrays["render"]
    np.testing.assert_allclose(from_srgb, from_linear, atol=1e-5)
    assert check_image(encoded, encoding="srgb").pixels == pytest.approx(srgb_to_linear(encoded), abs=1e-6)
