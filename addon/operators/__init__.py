"""Operators, one per file; each only translates between Blender and the Blender-free core."""

from .add_flow_field import NEURALSDF_OT_add_flow_field
from .add_landmark_pair import NEURALSDF_OT_add_landmark_pair
from .bake_curvature import NEURALSDF_OT_bake_curvature
from .bake_evolution import NEURALSDF_OT_bake_evolution
from .check_engine import NEURALSDF_OT_check_engine
from .curvature_colors import NEURALSDF_OT_curvature_colors
from .fit import NEURALSDF_OT_fit
from .make_lod import NEURALSDF_OT_make_lod
from .morph import NEURALSDF_OT_morph
from .preview_render import NEURALSDF_OT_preview_render
from .reextract import NEURALSDF_OT_reextract
from .ridge_lines import NEURALSDF_OT_ridge_lines
from .setup_engine import NEURALSDF_OT_setup_engine

classes = (
    NEURALSDF_OT_fit,
    NEURALSDF_OT_curvature_colors,
    NEURALSDF_OT_bake_curvature,
    NEURALSDF_OT_ridge_lines,
    NEURALSDF_OT_reextract,
    NEURALSDF_OT_preview_render,
    NEURALSDF_OT_make_lod,
    NEURALSDF_OT_bake_evolution,
    NEURALSDF_OT_add_flow_field,
    NEURALSDF_OT_morph,
    NEURALSDF_OT_add_landmark_pair,
    NEURALSDF_OT_setup_engine,
    NEURALSDF_OT_check_engine,
)
