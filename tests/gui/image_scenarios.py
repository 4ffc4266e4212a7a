"""GUI scenarios of the Image Editor tab (run by tests/gui/in_blender.py): what background mode cannot show, the
landmark clicks of Morph Images reaching the right pixels through Blender's real view transform."""

from __future__ import annotations

import math

import bpy
from gui_support import SETTLE_S, Scenario, addon, wait, wait_until, xdotool

IMAGE_SIZE = (256, 128)
"""Wider than tall, so a click's x and y scale differently."""
IMAGE_TAB_OFFSET_PX = 250
"""The Neural SDF tab below the Image Editor sidebar's top (Tool, Image, View, Scopes above it at the default scale)."""
CLICK_TOLERANCE_PX = 1.0
"""Image pixels a stored landmark may lie from the pixel aimed at: at the fitted zoom a screen pixel is under one."""
FROM_CLICKS = ((64.0, 32.0), (200.0, 100.0))
INTO_CLICKS = ((80.0, 40.0), (190.0, 90.0))


def image_editor():
    """The 3D view turned into an Image Editor: its window, area and main region."""
    window = bpy.context.window_manager.windows[0]
    area = max((a for a in window.screen.areas if a.type in {"VIEW_3D", "IMAGE_EDITOR"}), key=lambda a: a.width * a.height)
    area.type = "IMAGE_EDITOR"
    return window, area, next(r for r in area.regions if r.type == "WINDOW")


def show(image: bpy.types.Image) -> None:
    window, area, region = image_editor()
    area.spaces.active.image = image
    area.spaces.active.show_region_ui = True
    with bpy.context.temp_override(window=window, area=area, region=region):
        bpy.ops.image.view_all(fit_view=True)


def screen_point(x: float, y: float) -> tuple[int, int]:
    """Image pixel (origin top-left) as X screen coordinates (origin top-left), through the editor's own view."""
    window, _, region = image_editor()
    width, height = IMAGE_SIZE
    rx, ry = region.view2d.view_to_region(x / width, 1.0 - y / height, clip=False)
    return region.x + rx, window.height - (region.y + ry)


def click(x: float, y: float) -> None:
    sx, sy = screen_point(x, y)
    xdotool("mousemove", str(sx), str(sy), "click", "1")


def ctrl_click(x: float, y: float):
    """A click with Ctrl held, as three X events a tick apart (in one xdotool chain the Ctrl is released before the
    click arrives)."""
    sx, sy = screen_point(x, y)
    xdotool("mousemove", str(sx), str(sy), "keydown", "Control_L")
    yield from wait(0.3)
    xdotool("click", "1")
    yield from wait(0.3)
    xdotool("keyup", "Control_L")


def open_image_sidebar_tab() -> None:
    window, area, _ = image_editor()
    ui = next(r for r in area.regions if r.type == "UI")
    x, y = ui.x + ui.width - 10, window.height - (ui.y + ui.height) + IMAGE_TAB_OFFSET_PX
    xdotool("mousemove", str(x), str(y), "click", "1")


def key_over_image(keys: str) -> None:
    sx, sy = screen_point(IMAGE_SIZE[0] / 2, IMAGE_SIZE[1] / 2)
    xdotool("mousemove", str(sx), str(sy), "key", "--clearmodifiers", keys)


def landmarks(name: str) -> dict[int, tuple[float, float]]:
    """The landmarks stored on image ``name``, read as the add-on reads them (by name: an undo replaces the
    datablocks that Python holds)."""
    return addon("operators.image_landmarks").landmarks_of(bpy.data.images[name])


def near(point, aimed) -> bool:
    return point is not None and math.dist(point, aimed) <= CLICK_TOLERANCE_PX


def image_landmarks_click(run: Scenario):
    images = [bpy.data.images.new(name, *IMAGE_SIZE) for name in ("From", "Into")]
    for image, pattern in zip(images, ("UV_GRID", "COLOR_GRID")):
        image.generated_type = pattern
    settings = bpy.context.scene.neural_sdf_image
    settings.morph_source, settings.morph_target = images
    show(images[0])
    bpy.ops.ed.undo_push(message="Scenario images")  # as a user's New Image: Ctrl+Z later stops here
    yield from wait(SETTLE_S)
    window, area, region = image_editor()
    with bpy.context.temp_override(window=window, area=area, region=region):
        started = bpy.ops.neural_sdf.image_place_landmarks("INVOKE_DEFAULT")
    run.check("Place Landmarks starts modal in the Image Editor", started == {"RUNNING_MODAL"}, started)
    for number, (aimed_from, aimed_into) in enumerate(zip(FROM_CLICKS, INTO_CLICKS), start=1):
        show(images[0])
        yield from wait(0.5)
        click(*aimed_from)
        placed = yield from wait_until(lambda: len(landmarks("From")) == number, 5)
        point = landmarks("From").get(number)
        run.check(f"a click on From places landmark {number} at the pixel aimed at", placed and near(point, aimed_from),
                  f"aimed {aimed_from}, stored {point}")
        show(images[1])
        yield from wait(0.5)
        click(*aimed_into)
        placed = yield from wait_until(lambda: len(landmarks("Into")) == number, 5)
        point = landmarks("Into").get(number)
        run.check(f"... and on Into its partner {number}", placed and near(point, aimed_into),
                  f"aimed {aimed_into}, stored {point}")
    click(IMAGE_SIZE[0] * 1.3, IMAGE_SIZE[1] / 2)  # beside the image
    yield from wait(1.0)
    run.check("a click beside the image adds nothing", len(landmarks("Into")) == 2, landmarks("Into"))
    yield from wait(SETTLE_S)
    run.shot("landmarks-into", "Into with its two numbered landmarks (green: paired)")
    yield from ctrl_click(*INTO_CLICKS[0])
    removed = yield from wait_until(lambda: 1 not in landmarks("Into"), 5)
    run.check("Ctrl+click removes the landmark under the mouse", removed and set(landmarks("Into")) == {2},
              landmarks("Into"))
    show(images[0])
    yield from wait(SETTLE_S)
    run.shot("landmarks-from", "From: landmark 1 orange (its partner was removed), 2 green")
    key_over_image("Escape")
    yield from wait(0.5)
    click(128.0, 64.0)
    yield from wait(1.0)
    run.check("after Esc a click places nothing", len(landmarks("From")) == 2, landmarks("From"))
    key_over_image("ctrl+z")
    undone = yield from wait_until(lambda: 1 in landmarks("Into"), 5)
    run.check("Ctrl+Z brings the removed landmark back", removed and undone, landmarks("Into"))
    open_image_sidebar_tab()
    yield from wait(SETTLE_S)
    run.shot("image-tab", "the Image Editor's Neural SDF tab: Seamless Tile, Fit and Render, Morph with the landmark counts")
