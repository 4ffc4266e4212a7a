"""Landmark pairs of an image morph, placed on the images in the Image Editor: Place Landmarks (click a point on one
image, then its partner on the other; Ctrl+click removes one; right-click or Esc ends), Add Landmark at explicit
pixel coordinates (scripts), Clear Landmarks, and the draw handler that shows them numbered.

Landmarks are stored on each image (its custom property `core.images.LANDMARKS_PROPERTY`) in pixel coordinates
(origin top-left, y down), so they stay with the image, are saved with the .blend and are undone with it."""

import math

import bpy

from ..core.images import (
    HIT_RADIUS_PX,
    LANDMARKS_PROPERTY,
    landmark_points,
    nearest_landmark,
    next_pair,
    pixel_to_view,
    stored_landmarks,
    view_to_pixel,
)

PAIRED_COLOUR = (0.3, 0.9, 0.4, 1.0)
ALONE_COLOUR = (1.0, 0.55, 0.1, 1.0)
"""A landmark whose partner is placed, and one still waiting for it."""
CIRCLE = [(6.0 * math.cos(k * math.pi / 8), 6.0 * math.sin(k * math.pi / 8)) for k in range(16)]
"""The drawn marker: a circle of 6 screen pixels."""


def landmarks_of(image: bpy.types.Image) -> dict[int, tuple[float, float]]:
    return landmark_points(image.get(LANDMARKS_PROPERTY))


def partner_image(context, image: bpy.types.Image) -> bpy.types.Image | None:
    """The other image of the morph (From / Into in the Neural SDF tab) when ``image`` is one of them."""
    settings = context.scene.neural_sdf_image
    if image == settings.morph_source:
        return settings.morph_target
    if image == settings.morph_target:
        return settings.morph_source
    return None


def add_landmark(context, image: bpy.types.Image, x: float, y: float, pair: int = 0) -> int:
    """Add (or move, when ``pair`` is taken on this image) landmark ``pair`` at pixel (x, y); ``pair`` 0 takes the
    next one (`core.images.next_pair`). Returns its pair id."""
    here = landmarks_of(image)
    partner = partner_image(context, image)
    if pair <= 0:
        pair = next_pair(here, {} if partner is None else landmarks_of(partner))
    here[pair] = (float(x), float(y))
    image[LANDMARKS_PROPERTY] = stored_landmarks(here)
    return pair


def remove_landmark(image: bpy.types.Image, pair: int) -> None:
    here = landmarks_of(image)
    here.pop(pair, None)
    image[LANDMARKS_PROPERTY] = stored_landmarks(here)


class NEURALSDF_OT_image_landmark(bpy.types.Operator):
    """Add a landmark of a morph at explicit pixel coordinates (origin top-left, y down) of an image, with the next
    pair number unless one is given (scripts; Place Landmarks clicks them), or remove one"""

    bl_idname = "neural_sdf.image_landmark"
    bl_label = "Add Landmark"
    bl_options = {"REGISTER", "UNDO"}

    image: bpy.props.StringProperty(name="Image", description="The image to add to (default: the one shown)")
    x: bpy.props.FloatProperty(name="X", description="Pixels from the image's left edge")
    y: bpy.props.FloatProperty(name="Y", description="Pixels from the image's top edge")
    pair: bpy.props.IntProperty(name="Pair", min=0, description="The pair's number; 0: the next one")
    remove: bpy.props.BoolProperty(name="Remove", description="Remove landmark Pair instead of adding one")

    def execute(self, context):
        image = bpy.data.images.get(self.image) if self.image else _shown_image(context)
        if image is None:
            self.report({"ERROR"}, f"No image '{self.image}'" if self.image else "Show an image in the Image Editor")
            return {"CANCELLED"}
        width, height = image.size
        if self.remove:
            remove_landmark(image, self.pair)
            return {"FINISHED"}
        if not (0.0 <= self.x <= width and 0.0 <= self.y <= height):
            self.report({"ERROR"}, f"({self.x:g}, {self.y:g}) is outside '{image.name}' ({width}x{height} pixels)")
            return {"CANCELLED"}
        add_landmark(context, image, self.x, self.y, self.pair)
        return {"FINISHED"}


class NEURALSDF_OT_image_place_landmarks(bpy.types.Operator):
    """Place landmark pairs of a morph: click a point of the From image, then the same feature on the Into image
    (each pair is numbered); Ctrl+click removes the landmark under the mouse; right-click or Esc ends"""

    bl_idname = "neural_sdf.image_place_landmarks"
    bl_label = "Place Landmarks"
    # Not an undo step of its own (its redo would have nothing to repeat): each click pushes one.

    @classmethod
    def poll(cls, context):
        if context.area is None or context.area.type != "IMAGE_EDITOR" or _shown_image(context) is None:
            cls.poll_message_set("Show an image in the Image Editor")
            return False
        return True

    def invoke(self, context, event):
        context.window_manager.modal_handler_add(self)
        context.workspace.status_text_set("Click: add a landmark  ·  Ctrl+click: remove one  ·  Right-click/Esc: done")
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type in {"RIGHTMOUSE", "ESC"} and event.value == "PRESS":
            context.workspace.status_text_set(None)
            return {"FINISHED"}
        if event.type != "LEFTMOUSE" or event.value != "PRESS":
            return {"PASS_THROUGH"}  # pan, zoom, switching images stay as they are
        region, image = _window_region(context, event), _shown_image(context)
        if region is None or image is None:
            return {"PASS_THROUGH"}
        mouse = (event.mouse_x - region.x, event.mouse_y - region.y)
        width, height = image.size
        if event.ctrl:

            def screen(x, y):
                return region.view2d.view_to_region(*pixel_to_view(x, y, width, height), clip=False)

            pair = nearest_landmark(landmarks_of(image), screen, mouse, HIT_RADIUS_PX)
            if pair is not None:
                remove_landmark(image, pair)
                bpy.ops.ed.undo_push(message="Remove Landmark")
        else:
            pixel = view_to_pixel(*region.view2d.region_to_view(*mouse), width, height)
            if pixel is None:
                return {"RUNNING_MODAL"}  # a click beside the image adds nothing
            add_landmark(context, image, *pixel)
            bpy.ops.ed.undo_push(message="Add Landmark")
        context.area.tag_redraw()
        return {"RUNNING_MODAL"}


class NEURALSDF_OT_image_clear_landmarks(bpy.types.Operator):
    """Remove every landmark of the image shown (or the named one)"""

    bl_idname = "neural_sdf.image_clear_landmarks"
    bl_label = "Clear Landmarks"
    bl_options = {"REGISTER", "UNDO"}

    image: bpy.props.StringProperty(name="Image")

    def execute(self, context):
        image = bpy.data.images.get(self.image) if self.image else _shown_image(context)
        if image is not None and LANDMARKS_PROPERTY in image:
            del image[LANDMARKS_PROPERTY]
        return {"FINISHED"}


def _shown_image(context) -> bpy.types.Image | None:
    space = getattr(context, "space_data", None)
    return getattr(space, "image", None) if getattr(space, "type", "") == "IMAGE_EDITOR" else None


def _window_region(context, event):
    for region in context.area.regions:
        if region.type == "WINDOW" and 0 <= event.mouse_x - region.x < region.width and \
                0 <= event.mouse_y - region.y < region.height:  # fmt: skip
            return region
    return None


def draw_landmarks() -> None:
    """SpaceImageEditor draw handler (POST_PIXEL): each landmark of the image shown, a circle and its pair number;
    green when its partner is placed, orange while it waits for it."""
    import blf
    import gpu
    from gpu_extras.batch import batch_for_shader

    context = bpy.context
    image, region = _shown_image(context), context.region
    if image is None or region is None or LANDMARKS_PROPERTY not in image:
        return
    width, height = image.size
    if width == 0 or height == 0:
        return
    partner = partner_image(context, image)
    there = {} if partner is None else landmarks_of(partner)
    shader = gpu.shader.from_builtin("UNIFORM_COLOR")
    for pair, (x, y) in landmarks_of(image).items():
        sx, sy = region.view2d.view_to_region(*pixel_to_view(x, y, width, height), clip=False)
        colour = PAIRED_COLOUR if pair in there else ALONE_COLOUR
        batch = batch_for_shader(shader, "LINE_LOOP", {"pos": [(sx + dx, sy + dy) for dx, dy in CIRCLE]})
        shader.uniform_float("color", colour)
        batch.draw(shader)
        blf.position(0, sx + 8, sy + 8, 0)
        blf.color(0, *colour)
        blf.size(0, 14)
        blf.draw(0, str(pair))


_handle = None


def register_drawing() -> None:
    global _handle
    if _handle is None:
        _handle = bpy.types.SpaceImageEditor.draw_handler_add(draw_landmarks, (), "WINDOW", "POST_PIXEL")


def unregister_drawing() -> None:
    global _handle
    if _handle is not None:
        bpy.types.SpaceImageEditor.draw_handler_remove(_handle, "WINDOW")
        _handle = None
