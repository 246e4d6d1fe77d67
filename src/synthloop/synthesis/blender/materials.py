"""Procedural Cycles materials, one per preset name (built once per worker process).

Per-object variation costs nothing at render time: the plan's colour and roughness go into
``Object.color`` (RGB + roughness in alpha), pattern parameters into object custom properties
(``syn_color2``, ``syn_pattern``, ``syn_scale``) read by Attribute nodes. Every texture is
evaluated in object space (image textures by box projection), so no mesh needs UVs. Printed
packaging (``printed``) uses the design PNGs the host drew into the job's ``prints_dir``
(``synthesis.prints``; this interpreter has bpy but not Pillow).
"""

from __future__ import annotations

import os

import bpy

from synthloop.synthesis.blender.presets import MATERIALS, PATTERNS


def _rgb_mix(nodes, blend: str = "MIX"):
    """A colour Mix node and its (factor, A, B, result) sockets (the node has one socket of
    each name per data type: pick the colour ones)."""
    mix = nodes.new("ShaderNodeMix")
    mix.data_type, mix.blend_type = "RGBA", blend
    a, b = [s for s in mix.inputs if s.type == "RGBA"][:2]
    result = [s for s in mix.outputs if s.type == "RGBA"][0]
    return mix, mix.inputs[0], a, b, result


def _object_coords(nodes, links, scale_attr: bool = False):
    """Object-space coordinates, optionally multiplied by the object's ``syn_scale``."""
    coord = nodes.new("ShaderNodeTexCoord")
    if not scale_attr:
        return coord.outputs["Object"]
    attr = nodes.new("ShaderNodeAttribute")
    attr.attribute_type, attr.attribute_name = "OBJECT", "syn_scale"
    mul = nodes.new("ShaderNodeVectorMath")
    mul.operation = "SCALE"
    links.new(coord.outputs["Object"], mul.inputs[0])
    links.new(attr.outputs["Fac"], mul.inputs["Scale"])
    return mul.outputs["Vector"]


def _roughness_texture(nodes, links, style: str):
    """A 0..1 factor that modulates roughness: brushed streaks, speckle, or coarse roughness."""
    if style in ("none", "pattern", "print"):
        return None
    mapping = nodes.new("ShaderNodeMapping")
    noise = nodes.new("ShaderNodeTexNoise")
    links.new(_object_coords(nodes, links), mapping.inputs["Vector"])
    links.new(mapping.outputs["Vector"], noise.inputs["Vector"])
    if style == "brushed":  # long thin streaks along x
        mapping.inputs["Scale"].default_value = (2.0, 300.0, 300.0)
        noise.inputs["Scale"].default_value = 4.0
        noise.inputs["Detail"].default_value = 6.0
    elif style in ("speckle", "terrazzo"):
        noise.inputs["Scale"].default_value = 400.0
        noise.inputs["Detail"].default_value = 2.0
    else:  # rough, grain
        noise.inputs["Scale"].default_value = 120.0
        noise.inputs["Detail"].default_value = 8.0
    return noise.outputs["Fac"]


def _scale_by(nodes, links, value, lo: float, hi: float, factor):
    """``value * (lo .. hi from factor)``, clamped to 0..1 for roughness-like inputs."""
    rng = nodes.new("ShaderNodeMapRange")
    rng.inputs["To Min"].default_value, rng.inputs["To Max"].default_value = lo, hi
    links.new(factor, rng.inputs["Value"])
    mul = nodes.new("ShaderNodeMath")
    mul.operation = "MULTIPLY"
    links.new(value, mul.inputs[0])
    links.new(rng.outputs["Result"], mul.inputs[1])
    return mul


def _pattern_factor(nodes, links):
    """0..1 factor of the pattern chosen by the object's ``syn_pattern`` (``PATTERNS``)."""
    vec = _object_coords(nodes, links, scale_attr=True)
    noise = nodes.new("ShaderNodeTexNoise")
    noise.inputs["Detail"].default_value = 4.0
    cells = nodes.new("ShaderNodeTexVoronoi")
    waves = nodes.new("ShaderNodeTexWave")
    waves.inputs["Distortion"].default_value = 4.0
    checker = nodes.new("ShaderNodeTexChecker")
    stripes = nodes.new("ShaderNodeTexWave")
    stripes.wave_profile = "SAW"
    outs = [noise.outputs["Fac"], cells.outputs["Distance"], waves.outputs["Fac"],
            checker.outputs["Fac"], stripes.outputs["Fac"]]
    for tex in (noise, cells, waves, checker, stripes):
        links.new(vec, tex.inputs["Vector"])
    which = nodes.new("ShaderNodeAttribute")
    which.attribute_type, which.attribute_name = "OBJECT", "syn_pattern"
    total = None
    for i, out in enumerate(outs[:len(PATTERNS)]):
        pick = nodes.new("ShaderNodeMath")
        pick.operation = "COMPARE"
        pick.inputs[1].default_value, pick.inputs[2].default_value = float(i), 0.5
        links.new(which.outputs["Fac"], pick.inputs[0])
        term = nodes.new("ShaderNodeMath")
        term.operation = "MULTIPLY"
        links.new(pick.outputs[0], term.inputs[0])
        links.new(out, term.inputs[1])
        if total is None:
            total = term.outputs[0]
        else:
            add = nodes.new("ShaderNodeMath")
            links.new(total, add.inputs[0])
            links.new(term.outputs[0], add.inputs[1])
            total = add.outputs[0]
    return total


def _base_color(nodes, links, style: str, info):
    """Base colour: the object's colour, mixed with a second colour by a pattern (random
    textures), or modulated by wood grain / terrazzo chips."""
    if style not in ("pattern", "grain", "terrazzo"):
        return info.outputs["Color"]
    mix, fac, a, b, result = _rgb_mix(nodes)
    links.new(info.outputs["Color"], a)
    if style == "pattern":
        second = nodes.new("ShaderNodeAttribute")
        second.attribute_type, second.attribute_name = "OBJECT", "syn_color2"
        links.new(_pattern_factor(nodes, links), fac)
        links.new(second.outputs["Color"], b)
        return result
    if style == "grain":
        tex = nodes.new("ShaderNodeTexWave")
        tex.inputs["Scale"].default_value, tex.inputs["Distortion"].default_value = 3.0, 2.0
        b.default_value = (0.12, 0.07, 0.03, 1.0)
        factor = tex.outputs["Fac"]
    else:  # terrazzo: light chips over the base colour
        tex = nodes.new("ShaderNodeTexVoronoi")
        tex.inputs["Scale"].default_value = 1500.0  # the floor is a unit plate scaled to 12 m
        b.default_value = (0.85, 0.82, 0.78, 1.0)
        ramp = nodes.new("ShaderNodeMapRange")
        ramp.inputs["From Min"].default_value, ramp.inputs["From Max"].default_value = 0.75, 0.8
        links.new(tex.outputs["Color"], ramp.inputs["Value"])
        factor = ramp.outputs["Result"]
    links.new(_object_coords(nodes, links), tex.inputs["Vector"])
    scaled = nodes.new("ShaderNodeMath")
    scaled.operation = "MULTIPLY"
    scaled.inputs[1].default_value = 0.5
    links.new(factor, scaled.inputs[0])
    links.new(scaled.outputs[0], fac)
    return result


def build_material(name: str) -> bpy.types.Material:
    p = MATERIALS[name]
    mat = bpy.data.materials.new(f"syn_{name}")
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    info = nodes.new("ShaderNodeObjectInfo")
    links.new(_base_color(nodes, links, p["texture"], info), bsdf.inputs["Base Color"])
    bsdf.inputs["Metallic"].default_value = p["metallic"]
    bsdf.inputs["Anisotropic"].default_value = p["anisotropic"]
    fac = _roughness_texture(nodes, links, p["texture"])
    if fac is None:
        links.new(info.outputs["Alpha"], bsdf.inputs["Roughness"])
    else:  # roughness = object roughness * (0.75 .. 1.25 from the texture)
        mul = _scale_by(nodes, links, info.outputs["Alpha"], 0.75, 1.25, fac)
        mul.use_clamp = True
        links.new(mul.outputs["Value"], bsdf.inputs["Roughness"])
    return mat


def texture_material(path: str) -> bpy.types.Material:
    """An image texture, box-projected in object space (no UVs), tinted by the object colour."""
    mat = bpy.data.materials.new(f"syn_tex_{bpy.path.basename(path)}")
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = bpy.data.images.load(path, check_existing=True)
    tex.projection, tex.projection_blend = "BOX", 0.2
    links.new(_object_coords(nodes, links, scale_attr=True), tex.inputs["Vector"])
    info = nodes.new("ShaderNodeObjectInfo")
    tint, fac, a, b, result = _rgb_mix(nodes, "MULTIPLY")
    fac.default_value = 1.0
    links.new(tex.outputs["Color"], a)
    links.new(info.outputs["Color"], b)
    links.new(result, bsdf.inputs["Base Color"])
    links.new(info.outputs["Alpha"], bsdf.inputs["Roughness"])
    return mat


def print_material(design: int, folder: str | None) -> bpy.types.Material:
    """Print ``design`` (``folder``/print_NNN.png, drawn by the host), box-projected once over
    each face of a unit-sized object (object coordinates -0.5..0.5 moved to 0..1)."""
    path = os.path.join(folder or "", f"print_{design:03d}.png")
    if not folder or not os.path.isfile(path):
        raise FileNotFoundError(f"print design {design}: {path} is missing (the host draws the "
                                f"designs a plan uses into the job's prints_dir)")
    mat = texture_material(path)
    mat.name = f"syn_print_{design:03d}"
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    tex = next(n for n in nodes if n.bl_idname == "ShaderNodeTexImage")
    tex.extension = "EXTEND"
    shift = nodes.new("ShaderNodeVectorMath")
    shift.operation = "ADD"
    shift.inputs[1].default_value = (0.5, 0.5, 0.5)
    links.new(tex.inputs["Vector"].links[0].from_socket, shift.inputs[0])
    links.new(shift.outputs["Vector"], tex.inputs["Vector"])
    return mat


class MaterialLibrary:
    """Preset materials built up front; image-texture and print materials built on first use."""

    def __init__(self, prints_dir: str | None = None):
        self.presets = {name: build_material(name) for name in MATERIALS}
        self.textures: dict[str, bpy.types.Material] = {}
        self.prints: dict[int, bpy.types.Material] = {}
        self.prints_dir = prints_dir

    def get(self, look: dict) -> bpy.types.Material:
        if "print" in look:
            design = int(look["print"])
            if design not in self.prints:
                self.prints[design] = print_material(design, self.prints_dir)
            return self.prints[design]
        if look["material"] != "texture":
            return self.presets[look["material"]]
        if look["texture"] not in self.textures:
            self.textures[look["texture"]] = texture_material(look["texture"])
        return self.textures[look["texture"]]


def assign(ob, look: dict, library: MaterialLibrary) -> None:
    """Give ``ob`` the plan's material ``look`` (material, colour, roughness, pattern)."""
    ob.material_slots[0].link = "OBJECT"
    ob.material_slots[0].material = library.get(look)
    ob.color = (*look["color"], look["roughness"])
    ob["syn_color2"] = look.get("color2", (0.5, 0.5, 0.5))
    ob["syn_pattern"] = float(look.get("pattern", 0))
    ob["syn_scale"] = float(look.get("tex_scale", 1.0))
