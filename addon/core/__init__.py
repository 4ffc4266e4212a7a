"""The add-on's Blender-free core: the engine worker client, job files, array checks, colour conversion, model
files and the engine environment. Nothing here imports bpy (plain pytest tests it) or torch (the engine runs in
its own process)."""
