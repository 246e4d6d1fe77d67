"""The workbench scene: a table (top at z = 0) on legs over a floor, paper sheets on the top,
clutter on the floor around it, a camera above with tilt, and parts dropped onto the table
that come to rest by Blender's rigid-body simulation.

Physics runs per image in a throw-away scene (a rigid-body world, a passive box for the table
top and convex-hull copies of the parts that share their mesh data), so the render scene is
never touched by the simulation and nothing leaks between images. Bullet is deterministic for
the same inputs, so the same plan gives the same resting poses.

``bpy`` is imported inside the functions: the host imports this module for ``RECIPE``
(blender/scenes/__init__.py).
"""

from __future__ import annotations

from synthloop.synthesis.blender.objects import mesh_object
from synthloop.synthesis.blender.presets import STATIC_INDEX

RECIPE = (("table", "table"), ("camera", "camera_overhead"), ("hdri", "hdri"),
          ("lights", "point_lights"), ("parts", "parts_dropped"),
          ("part_materials", "part_materials"), ("distractors", "clutter_floor"),
          ("distractor_materials", "distractor_materials"))

TOP_THICKNESS = 0.04
LEG_WIDTH = 0.05
FELL_OFF_Z = -0.02  # a part whose centre ends below this has fallen off the table


def _static(name: str, mesh, scene, root):
    ob = mesh_object(name, mesh, scene, root)
    ob.pass_index = STATIC_INDEX
    return ob


def build(scene, shapes: dict, plans: list[dict], root) -> dict:
    """Table top, four legs, floor and enough sheet slots for every plan of the job, all
    children of ``root`` (the scene's turntable)."""
    n_sheets = max([len(p["table"]["sheets"]) for p in plans] + [0])
    static = lambda name, shape: _static(name, shapes[shape], scene, root)  # noqa: E731
    return {"cube": shapes["cube"], "top": static("table_top", "cube"),
            "legs": [static(f"table_leg_{i}", "cube") for i in range(4)],
            "floor": static("floor", "plate"),
            "sheets": [static(f"sheet_{i}", "plate") for i in range(n_sheets)]}


def randomize(wb: dict, plan: dict, materials) -> None:
    """Size, place and colour the table, legs, floor and sheets for one image."""
    from mathutils import Quaternion

    from synthloop.synthesis.blender.materials import assign

    table = plan["table"]
    sx, sy = table["size"]
    h = table["height"]
    wb["top"].scale = (sx, sy, TOP_THICKNESS)
    wb["top"].location = (0.0, 0.0, -TOP_THICKNESS / 2)
    assign(wb["top"], table["top"], materials)
    inset_x, inset_y = sx / 2 - LEG_WIDTH / 2 - 0.01, sy / 2 - LEG_WIDTH / 2 - 0.01
    leg_h = h - TOP_THICKNESS
    for i, leg in enumerate(wb["legs"]):
        leg.scale = (LEG_WIDTH, LEG_WIDTH, leg_h)
        leg.location = ((-1) ** i * inset_x, (-1) ** (i // 2) * inset_y, -TOP_THICKNESS - leg_h / 2)
        assign(leg, table["legs"], materials)
    wb["floor"].scale = (12.0, 12.0, 0.01)
    wb["floor"].location = (0.0, 0.0, -h - 0.005)
    assign(wb["floor"], table["floor"], materials)
    for i, ob in enumerate(wb["sheets"]):
        ob.hide_render = i >= len(table["sheets"])
        if i < len(table["sheets"]):
            sheet = table["sheets"][i]
            ob.scale = (*sheet["size"], 0.0004)
            ob.location = (*sheet["location"][:2], 0.0002 + 0.0001 * i)
            ob.rotation_quaternion = Quaternion(sheet["rotation_quat"])
            assign(ob, sheet, materials)


def _physics_scene(table: dict, cube_mesh):
    import bpy

    phys = bpy.data.scenes.new("syn_physics")
    with bpy.context.temp_override(scene=phys):
        bpy.ops.rigidbody.world_add()
    world = phys.rigidbody_world
    world.collection = bpy.data.collections.new("syn_rigid_bodies")
    world.point_cache.frame_start, world.point_cache.frame_end = 1, table["physics_frames"] + 1
    top = bpy.data.objects.new("syn_phys_table", cube_mesh)
    top.scale = (*table["size"], TOP_THICKNESS)
    top.location = (0.0, 0.0, -TOP_THICKNESS / 2)
    phys.collection.objects.link(top)
    world.collection.objects.link(top)
    top.rigid_body.type, top.rigid_body.collision_shape = "PASSIVE", "BOX"
    top.rigid_body.friction = 0.6
    return phys, [top]


def settle(wb: dict, parts: list, plan: dict) -> list[bool]:
    """Drop ``parts`` (render objects placed at their release poses) onto the table; move them
    to where they come to rest, hide those that fell off. Returns on-table flags."""
    import bpy

    table = plan["table"]
    phys, bodies = _physics_scene(table, wb["cube"])
    world = phys.rigidbody_world
    for i, part in enumerate(parts):
        ob = bpy.data.objects.new(f"syn_phys_part_{i}", part.data)
        ob.rotation_mode = "QUATERNION"
        ob.location, ob.rotation_quaternion = part.location, part.rotation_quaternion
        phys.collection.objects.link(ob)
        world.collection.objects.link(ob)
        rb = ob.rigid_body
        rb.collision_shape, rb.mass, rb.friction = "CONVEX_HULL", 0.05, 0.5
        rb.use_margin, rb.collision_margin = True, 0.0005
        bodies.append(ob)
    for frame in range(1, table["physics_frames"] + 1):
        phys.frame_set(frame)
    on_table = []
    for part, ob in zip(parts, bodies[1:]):  # physics scene frame = the parts' parent frame
        loc, rot, _ = ob.matrix_world.decompose()
        part.location, part.rotation_quaternion = loc, rot
        on_table.append(loc.z > FELL_OFF_Z)
        part.hide_render = not on_table[-1]
    collection = world.collection
    for ob in bodies:
        bpy.data.objects.remove(ob, do_unlink=True)
    bpy.data.scenes.remove(phys)
    bpy.data.collections.remove(collection)
    return on_table
