"""Neural SDF: fit neural signed distance functions to meshes and colour meshes by their curvature.

The Blender-facing modules (operators, panels, properties) only translate between Blender and the Blender-free
`core` package; the engine runs in a worker process, so torch is never imported into Blender. bpy is imported
only when Blender registers the add-on, which keeps `core` importable without Blender.
"""


def register():
    from . import registration

    registration.register()


def unregister():
    from . import registration

    registration.unregister()
