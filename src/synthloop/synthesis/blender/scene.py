"""Build the scene once per worker, then mutate it for each image plan.

Object pass indices: parts 1..P in plan order, distractors/clutter 1001.., table and floor
3000 (``presets``); unused slots are ``hide_render``. Mesh data is swapped per slot, so nothing
is created per image and Cycles' persistent data keeps the BVH of everything that did not
change. ``profile='blender_default'`` keeps Blender's own Cycles settings (the paper's way,
for benchmarks); ``synthloop`` applies the quality preset.

The world shader changes only when the HDRI file changes: Cycles rebuilds the environment's
importance map (about a second at full resolution) whenever the world changes, so instead of
rotating the HDRI the whole scene (camera, objects, lights: children of ``syn_root``) turns the
other way, and instead of scaling its strength the film exposure scales the image (and point
lights are divided by it). Both give the same image; shards come sorted by HDRI.

What a scene preset adds (a table, physics, ...) comes from its module in ``scenes/``, looked
up by the job's ``scene``: ``build`` once, ``randomize`` and ``settle`` per image.
"""

from __future__ import annotations

import glob
import math
import os

import bpy  # isort: skip
from mathutils import Euler, Quaternion, Vector

from synthloop.synthesis.blender import imports, scenes
from synthloop.synthesis.blender.materials import MaterialLibrary, assign
from synthloop.synthesis.blender.objects import mesh_object
from synthloop.synthesis.blender.presets import (DISTRACTOR_INDEX_BASE, PART_INDEX_BASE,
                                                 QUALITY)


def _has_oidn() -> bool:
    """OpenImageDenoise is in the PyPI bpy builds; a build without it renders undenoised."""
    import _cycles

    if getattr(_cycles, "with_openimagedenoise", False):
        return True
    print("synthloop-worker: this Blender has no OpenImageDenoise: denoising off", flush=True)
    return False


def configure_render(scene, job: dict) -> None:
    scene.render.engine = "CYCLES"
    cyc = scene.cycles
    cyc.device = "CPU"
    cyc.samples = int(job["samples"])
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = job["width"], job["height"], 100
    r.film_transparent = True
    if job.get("threads"):
        r.threads_mode, r.threads = "FIXED", int(job["threads"])
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGBA"
    r.image_settings.color_depth = "8"
    r.image_settings.compression = 15
    scene.view_layers[0].use_pass_object_index = True
    cyc.use_denoising = bool(job["denoise"]) and _has_oidn()
    if job.get("profile") == "blender_default":
        return  # Blender's defaults: adaptive 0.01, 12 bounces, OIDN HIGH/ACCURATE, no persistence
    q = QUALITY[job.get("quality", "default")]
    cyc.use_adaptive_sampling = True
    cyc.adaptive_threshold = q["adaptive_threshold"]
    if job["denoise"]:  # the preset picks quality and prefilter (see presets.QUALITY)
        cyc.denoiser = "OPENIMAGEDENOISE"
        cyc.denoising_quality, cyc.denoising_prefilter = q["denoiser"]
    (cyc.max_bounces, cyc.diffuse_bounces, cyc.glossy_bounces, cyc.transmission_bounces,
     cyc.transparent_max_bounces) = q["bounces"]
    cyc.volume_bounces = 0
    cyc.caustics_reflective = cyc.caustics_refractive = False
    cyc.use_light_tree = q["light_tree"]
    r.use_persistent_data = True


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


def hdri_files(job: dict) -> list[str]:
    """The job's HDRIs, or Blender's bundled studio lights when it names none."""
    if job.get("hdris"):
        return list(job["hdris"])
    folder = bpy.utils.system_resource("DATAFILES", path="studiolights/world")
    files = sorted(glob.glob(os.path.join(folder, "*.exr")))
    if not files:
        raise RuntimeError(f"no studio-light HDRIs found in {folder}")
    return files


def setup_world(scene, job: dict) -> dict:
    world = bpy.data.worlds.new("syn_world")
    scene.world = world
    world.use_nodes = True
    res = QUALITY.get(job.get("quality", "default"), {}).get("sample_map")
    if res and job.get("profile") != "blender_default":
        world.cycles.sampling_method, world.cycles.sample_map_resolution = "MANUAL", res
    nt = world.node_tree
    nt.nodes.clear()
    coord, mapping = nt.nodes.new("ShaderNodeTexCoord"), nt.nodes.new("ShaderNodeMapping")
    env, bg = nt.nodes.new("ShaderNodeTexEnvironment"), nt.nodes.new("ShaderNodeBackground")
    out = nt.nodes.new("ShaderNodeOutputWorld")
    nt.links.new(coord.outputs["Generated"], mapping.inputs["Vector"])
    nt.links.new(mapping.outputs["Vector"], env.inputs["Vector"])
    nt.links.new(env.outputs["Color"], bg.inputs["Color"])
    nt.links.new(bg.outputs["Background"], out.inputs["Surface"])
    files = hdri_files(job)
    # loaded lazily: a fresh-scene baseline should not pay for images it never shows
    return {"env": env, "mapping": mapping, "bg": bg, "files": files, "images": {}}


def _slot_object(name: str, mesh, scene, root) -> bpy.types.Object:
    ob = mesh_object(name, mesh, scene, root)
    ob.hide_render = True
    return ob


def _light_slot(i: int, scene, root) -> bpy.types.Object:
    data = bpy.data.lights.new(f"syn_light_{i}", "POINT")
    ob = bpy.data.objects.new(f"syn_light_{i}", data)
    scene.collection.objects.link(ob)
    ob.parent = root
    ob.hide_render = True
    return ob


def build(job: dict, tmp_dir: str) -> dict:
    """Reset Blender and build the scene for a whole job; returns handles for ``apply``."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    configure_render(scene, job)
    setup_index_output(scene, tmp_dir)
    cam_data = bpy.data.cameras.new("syn_camera")
    cam_data.sensor_fit, cam_data.sensor_width = "AUTO", 36.0
    cam_data.clip_start, cam_data.clip_end = 0.005, 50.0
    root = bpy.data.objects.new("syn_root", None)  # turns instead of the HDRI (see above)
    scene.collection.objects.link(root)
    camera = bpy.data.objects.new("syn_camera", cam_data)
    scene.collection.objects.link(camera)
    camera.parent = root
    scene.camera = camera
    part_meshes, scales = imports.import_parts(job["meshes"])
    shapes = imports.shipped_meshes()
    for i, path in enumerate(job.get("distractor_meshes", [])):
        shapes[f"mesh:{i}"] = imports.import_distractor(path, i)
    plans = [item["plan"] for item in job["images"]]
    n_parts = max([len(p["parts"]) for p in plans] + [1])
    n_dis = max([len(p["distractors"]) for p in plans] + [0])
    n_lights = max([len(p.get("lights", [])) for p in plans] + [0])
    h = {"scene": scene, "camera": camera, "root": root, "world": setup_world(scene, job),
         "fixed_world": job.get("profile") != "blender_default",
         "materials": MaterialLibrary(job.get("prints_dir")), "part_meshes": part_meshes,
         "part_scales": scales,
         "shapes": shapes,
         "part_slots": [_slot_object(f"part_{i}", part_meshes[0], scene, root)
                        for i in range(n_parts)],
         "dis_slots": [_slot_object(f"distractor_{i}", shapes["cube"], scene, root)
                       for i in range(n_dis)],
         "light_slots": [_light_slot(i, scene, root) for i in range(n_lights)]}
    h["preset"] = scenes.get_scene(job.get("scene") or scenes.DEFAULT)
    h["preset_state"] = h["preset"].build(scene, shapes, plans, root)
    return h


def _place(ob, item: dict, materials, index: int) -> None:
    ob.location = item["location"]
    ob.rotation_quaternion = Quaternion(item["rotation_quat"])
    assign(ob, item, materials)
    ob.pass_index = index
    ob.hide_render = False


def _apply_camera(camera, cam: dict) -> None:
    el, az = math.radians(cam["elevation_deg"]), math.radians(cam["azimuth_deg"])
    target = Vector(cam["look_at"])
    offset = Vector((math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)))
    camera.location = target + cam["distance"] * offset
    # straight down, "up" is undefined for to_track_quat: use +x of the azimuth instead
    up = "Y" if abs(offset.z) < 0.999 else "X"
    look = (target - camera.location).to_track_quat("-Z", up)
    camera.rotation_mode = "QUATERNION"
    camera.rotation_quaternion = look @ Quaternion((0, 0, 1), math.radians(cam["roll_deg"]))
    camera.data.lens = cam["focal_length_mm"]


def _apply_lighting(h: dict, plan: dict) -> None:
    w = h["world"]
    path = w["files"][int(plan["hdri"]["pick"] * len(w["files"])) % len(w["files"])]
    if path not in w["images"]:
        w["images"][path] = bpy.data.images.load(path, check_existing=True)
    if w["env"].image != w["images"][path]:
        w["env"].image = w["images"][path]
    strength, turn = plan["hdri"]["strength"], math.radians(plan["hdri"]["rotation_deg"])
    if h["fixed_world"]:  # same image as strength/rotation, without touching the world
        h["scene"].view_settings.exposure = math.log2(max(strength, 1e-6))
        h["root"].rotation_euler = Euler((0.0, 0.0, turn))  # mapping rotates the lookup vector
        light_scale = 1.0 / max(strength, 1e-6)
    else:
        w["bg"].inputs["Strength"].default_value = strength
        w["mapping"].inputs["Rotation"].default_value = Euler((0.0, 0.0, turn))
        light_scale = 1.0
    lights = plan.get("lights", [])
    for i, ob in enumerate(h["light_slots"]):
        ob.hide_render = i >= len(lights)
        if i < len(lights):
            ob.location = lights[i]["location"]
            ob.data.energy = lights[i]["power_w"] * light_scale
            ob.data.color = lights[i]["color"]
            ob.data.shadow_soft_size = lights[i]["radius"]


def apply(h: dict, plan: dict) -> list[bool]:
    """Mutate the scene to match one image plan (see ``synthloop.synthesis.plan``).

    Returns per part whether it is in the scene (the preset's ``settle``: a workbench part that
    fell off the table is not).
    """
    _apply_camera(h["camera"], plan["camera"])
    _apply_lighting(h, plan)
    for i, ob in enumerate(h["part_slots"]):
        if i < len(plan["parts"]):
            item = plan["parts"][i]
            ob.data = h["part_meshes"][item.get("mesh_index", item["class_index"])]
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
    preset, state = h["preset"], h["preset_state"]
    preset.randomize(state, plan, h["materials"])
    return preset.settle(state, h["part_slots"][:len(plan["parts"])], plan)
