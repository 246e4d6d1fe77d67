"""Build the floating scene once per worker, then mutate it for each image plan.

Object pass indices: parts 1..P in plan order, distractors 1001.. (``presets``); hidden slots
are ``hide_render``. Mesh data is swapped per slot, so nothing is created per image and Cycles'
persistent data keeps the BVH of everything that did not change.
"""

from __future__ import annotations

import glob
import math
import os

import bpy  # isort: skip  (bmesh and mathutils only import after bpy)
import bmesh
import numpy as np
from mathutils import Euler, Matrix, Quaternion, Vector

from synthloop.synthesis.blender import materials as mat_lib
from synthloop.synthesis.blender.presets import DISTRACTOR_INDEX_BASE, PART_INDEX_BASE

AUTO_MM_DIAGONAL = 10.0  # same rule as synthloop.synthesis.meshes (kept bpy-side: no import)
_IMPORTERS = {".stl": lambda p: bpy.ops.wm.stl_import(filepath=p),
              ".obj": lambda p: bpy.ops.wm.obj_import(filepath=p),
              ".ply": lambda p: bpy.ops.wm.ply_import(filepath=p),
              ".glb": lambda p: bpy.ops.import_scene.gltf(filepath=p),
              ".gltf": lambda p: bpy.ops.import_scene.gltf(filepath=p)}


def configure_render(scene, job: dict) -> None:
    scene.render.engine = "CYCLES"
    cyc = scene.cycles
    cyc.device = "CPU"
    cyc.samples = int(job["samples"])
    cyc.use_adaptive_sampling = True
    cyc.adaptive_threshold = 0.05
    cyc.use_denoising = bool(job["denoise"])
    if job["denoise"]:  # OIDN defaults cost seconds per image on a CPU; FAST is enough here
        cyc.denoiser = "OPENIMAGEDENOISE"
        cyc.denoising_quality = "FAST"
        cyc.denoising_prefilter = "FAST"
    cyc.max_bounces, cyc.diffuse_bounces, cyc.glossy_bounces = 4, 2, 3
    cyc.transmission_bounces, cyc.volume_bounces, cyc.transparent_max_bounces = 0, 0, 2
    cyc.caustics_reflective = cyc.caustics_refractive = False
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = job["width"], job["height"], 100
    r.film_transparent = True
    r.use_persistent_data = True
    if job.get("threads"):
        r.threads_mode, r.threads = "FIXED", int(job["threads"])
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGBA"
    r.image_settings.color_depth = "8"
    r.image_settings.compression = 15
    scene.view_layers[0].use_pass_object_index = True


def setup_index_output(scene, tmp_dir: str) -> None:
    """Compositor: Image -> Composite (the PNG), IndexOB -> a 32-bit EXR (exact integers)."""
    scene.use_nodes = True
    nt = scene.node_tree
    nt.nodes.clear()
    rl = nt.nodes.new("CompositorNodeRLayers")
    comp = nt.nodes.new("CompositorNodeComposite")
    nt.links.new(rl.outputs["Image"], comp.inputs["Image"])
    out = nt.nodes.new("CompositorNodeOutputFile")
    out.base_path = tmp_dir
    out.format.file_format = "OPEN_EXR"
    out.format.color_depth = "32"
    out.format.exr_codec = "ZIP"
    out.file_slots[0].path = "ids_"
    nt.links.new(rl.outputs["IndexOB"], out.inputs[0])


def setup_world(scene) -> dict:
    world = bpy.data.worlds.new("syn_world")
    scene.world = world
    world.use_nodes = True
    # the world importance map is rebuilt whenever HDRI, strength or rotation change: at the
    # default 1024 that costs ~1.2 s an image on 2 cores, at 256 a few tens of ms
    world.cycles.sampling_method = "MANUAL"  # AUTOMATIC ignores the resolution below
    world.cycles.sample_map_resolution = 256
    nt = world.node_tree
    nt.nodes.clear()
    coord, mapping = nt.nodes.new("ShaderNodeTexCoord"), nt.nodes.new("ShaderNodeMapping")
    env, bg = nt.nodes.new("ShaderNodeTexEnvironment"), nt.nodes.new("ShaderNodeBackground")
    out = nt.nodes.new("ShaderNodeOutputWorld")
    nt.links.new(coord.outputs["Generated"], mapping.inputs["Vector"])
    nt.links.new(mapping.outputs["Vector"], env.inputs["Vector"])
    nt.links.new(env.outputs["Color"], bg.inputs["Color"])
    nt.links.new(bg.outputs["Background"], out.inputs["Surface"])
    folder = bpy.utils.system_resource("DATAFILES", path="studiolights/world")
    files = sorted(glob.glob(os.path.join(folder, "*.exr")))
    if not files:
        raise RuntimeError(f"no studio-light HDRIs found in {folder}")
    images = [bpy.data.images.load(f, check_existing=True) for f in files]
    return {"env": env, "mapping": mapping, "bg": bg, "images": images}


def _join_imported(objs, name: str) -> bpy.types.Mesh:
    bm = bmesh.new()
    for ob in objs:
        me = ob.data.copy()
        me.transform(ob.matrix_world)
        bm.from_mesh(me)
        bpy.data.meshes.remove(me)
    mesh = bpy.data.meshes.new(name)
    bm.to_mesh(mesh)
    bm.free()
    return mesh


def import_part(spec: dict) -> tuple[bpy.types.Mesh, float]:
    """Import one mesh file as recentred, metre-scaled mesh data; returns (mesh, scale)."""
    before = set(bpy.data.objects)
    ext = os.path.splitext(spec["path"])[1].lower()
    _IMPORTERS[ext](spec["path"])
    new = [o for o in bpy.data.objects if o not in before]
    meshes = [o for o in new if o.type == "MESH" and len(o.data.vertices)]
    if not meshes:
        raise RuntimeError(f"mesh {spec['path']}: import produced no geometry")
    mesh = _join_imported(meshes, f"part_{spec['name']}")
    for ob in new:
        bpy.data.objects.remove(ob, do_unlink=True)
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    lo, hi = co.min(0), co.max(0)
    diag = float(np.linalg.norm(hi - lo))
    scale = {"m": 1.0, "mm": 0.001}.get(spec["unit"], 0.001 if diag > AUTO_MM_DIAGONAL else 1.0)
    centre = (lo + hi) / 2
    mesh.transform(Matrix.Diagonal((scale, scale, scale, 1.0)) @ Matrix.Translation(-Vector(centre)))
    mesh.materials.clear()
    mesh.materials.append(None)
    mesh.shade_flat()
    return mesh, scale


def _torus(name: str) -> bpy.types.Mesh:
    bm = bmesh.new()
    major, minor, nu, nv = 0.35, 0.15, 24, 12
    verts = [[bm.verts.new(((major + minor * math.cos(v)) * math.cos(u),
                            (major + minor * math.cos(v)) * math.sin(u), minor * math.sin(v)))
              for v in np.linspace(0, 2 * math.pi, nv, endpoint=False)]
             for u in np.linspace(0, 2 * math.pi, nu, endpoint=False)]
    for i in range(nu):
        for j in range(nv):
            bm.faces.new((verts[i][j], verts[(i + 1) % nu][j], verts[(i + 1) % nu][(j + 1) % nv],
                          verts[i][(j + 1) % nv]))
    mesh = bpy.data.meshes.new(name)
    bm.to_mesh(mesh)
    bm.free()
    return mesh


def distractor_meshes() -> dict[str, bpy.types.Mesh]:
    """Unit-sized primitives (about 1 across) keyed by ``presets.DISTRACTOR_SHAPES``."""
    out = {}
    for shape in ("cube", "sphere", "cylinder", "cone", "plate"):
        bm = bmesh.new()
        if shape in ("cube", "plate"):
            bmesh.ops.create_cube(bm, size=1.0)
        elif shape == "sphere":
            bmesh.ops.create_uvsphere(bm, u_segments=24, v_segments=12, radius=0.5)
        else:
            bmesh.ops.create_cone(bm, cap_ends=True, segments=24, radius1=0.5,
                                  radius2=0.5 if shape == "cylinder" else 0.0, depth=1.0)
        mesh = bpy.data.meshes.new(f"distractor_{shape}")
        bm.to_mesh(mesh)
        bm.free()
        out[shape] = mesh
    out["torus"] = _torus("distractor_torus")
    for name, mesh in out.items():
        mesh.materials.append(None)
        (mesh.shade_flat if name in ("cube", "plate") else mesh.shade_smooth)()
    return out


def _slot_object(name: str, mesh, scene) -> bpy.types.Object:
    ob = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(ob)
    ob.material_slots[0].link = "OBJECT"
    ob.rotation_mode = "QUATERNION"
    ob.hide_render = True
    return ob


def build(job: dict, tmp_dir: str) -> dict:
    """Reset Blender and build the scene for a whole job; returns handles for ``apply``."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    configure_render(scene, job)
    setup_index_output(scene, tmp_dir)
    world = setup_world(scene)
    cam_data = bpy.data.cameras.new("syn_camera")
    cam_data.sensor_fit, cam_data.sensor_width = "AUTO", 36.0
    cam_data.clip_start, cam_data.clip_end = 0.005, 50.0
    camera = bpy.data.objects.new("syn_camera", cam_data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    parts = [import_part(spec) for spec in job["meshes"]]
    shapes = distractor_meshes()
    n_parts = max([len(p["parts"]) for p in job["images"]] + [1])
    n_dis = max([len(p["distractors"]) for p in job["images"]] + [0])
    return {"scene": scene, "camera": camera, "world": world, "materials": mat_lib.build_all(),
            "part_meshes": [m for m, _ in parts], "part_scales": [s for _, s in parts],
            "shapes": shapes,
            "part_slots": [_slot_object(f"part_{i}", parts[0][0], scene) for i in range(n_parts)],
            "dis_slots": [_slot_object(f"distractor_{i}", shapes["cube"], scene)
                          for i in range(n_dis)]}


def _place(ob, item: dict, materials: dict, index: int) -> None:
    ob.location = item["location"]
    ob.rotation_quaternion = Quaternion(item["rotation_quat"])
    ob.material_slots[0].link = "OBJECT"
    ob.material_slots[0].material = materials[item["material"]]
    ob.color = (*item["color"], item["roughness"])
    ob.pass_index = index
    ob.hide_render = False


def apply(h: dict, plan: dict) -> None:
    """Mutate the scene to match one image plan (see ``synthloop.synthesis.plan``)."""
    cam = plan["camera"]
    el, az = math.radians(cam["elevation_deg"]), math.radians(cam["azimuth_deg"])
    target = Vector(cam["look_at"])
    offset = Vector((math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)))
    camera = h["camera"]
    camera.location = target + cam["distance"] * offset
    look = (target - camera.location).to_track_quat("-Z", "Y")
    camera.rotation_mode = "QUATERNION"
    camera.rotation_quaternion = look @ Quaternion((0, 0, 1), math.radians(cam["roll_deg"]))
    camera.data.lens = cam["focal_length_mm"]
    w = h["world"]
    w["env"].image = w["images"][int(plan["hdri"]["pick"] * len(w["images"])) % len(w["images"])]
    w["bg"].inputs["Strength"].default_value = plan["hdri"]["strength"]
    w["mapping"].inputs["Rotation"].default_value = Euler(
        (0.0, 0.0, math.radians(plan["hdri"]["rotation_deg"])))
    for i, ob in enumerate(h["part_slots"]):
        if i < len(plan["parts"]):
            item = plan["parts"][i]
            ob.data = h["part_meshes"][item["class_index"]]
            _place(ob, item, h["materials"], PART_INDEX_BASE + i)
        else:
            ob.hide_render = True
    for i, ob in enumerate(h["dis_slots"]):
        if i < len(plan["distractors"]):
            item = plan["distractors"][i]
            ob.data = h["shapes"][item["shape"]]
            ob.scale = item["scale"]
            _place(ob, item, h["materials"], DISTRACTOR_INDEX_BASE + i)
        else:
            ob.hide_render = True
    h["scene"].cycles.seed = plan["seed"]
