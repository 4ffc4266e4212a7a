"""Everything the Image Editor's tab registers (`registration` adds it to the add-on's): the settings and link
property groups, the operators, the panels, the save handlers for image models and the landmarks' draw handler."""

from ..panels import image_editor
from . import image_common, image_fit, image_landmarks, image_morph, image_saving, image_tile

classes = (
    *image_common.classes,
    image_tile.NEURALSDF_OT_image_tile,
    image_fit.NEURALSDF_OT_image_fit,
    image_fit.NEURALSDF_OT_image_render,
    image_fit.NEURALSDF_OT_image_mip_chain,
    image_morph.NEURALSDF_OT_image_morph,
    image_landmarks.NEURALSDF_OT_image_landmark,
    image_landmarks.NEURALSDF_OT_image_place_landmarks,
    image_landmarks.NEURALSDF_OT_image_clear_landmarks,
    *image_editor.classes,
)
ATTACHED = image_common.ATTACHED
HANDLERS = image_saving.HANDLERS
register_drawing = image_landmarks.register_drawing
unregister_drawing = image_landmarks.unregister_drawing
