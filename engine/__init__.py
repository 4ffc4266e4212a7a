"""Neural implicit surfaces: fit a SIREN signed distance function to meshes, extract and measure it.

Never imports bpy: the Blender add-on talks to this package through its worker process.
"""

__version__ = "0.1.0"
