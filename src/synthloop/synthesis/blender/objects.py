"""Creating Blender objects: the one place the scene and the scene presets make them.

``bpy`` is imported inside the functions: presets (blender/scenes/*) are imported on the host
too, for their recipes.
"""

from __future__ import annotations

from typing import Any


def mesh_object(name: str, mesh: Any, scene: Any, parent: Any) -> Any:
    """A new object of ``mesh`` in ``scene``, child of ``parent`` (the turntable), rotated by
    quaternion, its material set per object (slot 0 linked to the object, not the mesh: many
    objects share one mesh and each gets its own look)."""
    import bpy

    ob = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(ob)
    ob.parent = parent
    ob.material_slots[0].link = "OBJECT"
    ob.rotation_mode = "QUATERNION"
    return ob


def bmesh_mesh(name: str, build: Any) -> Any:
    """A new mesh datablock ``name`` from ``build(bm)`` filling a fresh bmesh."""
    import bmesh
    import bpy

    bm = bmesh.new()
    try:
        build(bm)
        mesh = bpy.data.meshes.new(name)
        bm.to_mesh(mesh)
    finally:
        bm.free()
    return mesh
