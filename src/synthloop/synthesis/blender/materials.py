"""Procedural Cycles materials, one per preset name (built once per worker process).

Per-object variation costs nothing at render time: the plan's colour and roughness go into
``Object.color`` (RGB + roughness in alpha) and the shader reads them through Object Info.
"""

from __future__ import annotations

import bpy

from synthloop.synthesis.blender.presets import MATERIALS


def _texture(nodes, links, style: str):
    """A 0..1 factor that modulates roughness: brushed streaks, speckle, or coarse roughness."""
    if style == "none":
        return None
    coord = nodes.new("ShaderNodeTexCoord")
    mapping = nodes.new("ShaderNodeMapping")
    noise = nodes.new("ShaderNodeTexNoise")
    links.new(coord.outputs["Object"], mapping.inputs["Vector"])
    links.new(mapping.outputs["Vector"], noise.inputs["Vector"])
    if style == "brushed":  # long thin streaks along x
        mapping.inputs["Scale"].default_value = (2.0, 300.0, 300.0)
        noise.inputs["Scale"].default_value = 4.0
        noise.inputs["Detail"].default_value = 6.0
    elif style == "speckle":
        noise.inputs["Scale"].default_value = 400.0
        noise.inputs["Detail"].default_value = 2.0
    else:  # rough
        noise.inputs["Scale"].default_value = 120.0
        noise.inputs["Detail"].default_value = 8.0
    return noise.outputs["Fac"]


def build_material(name: str) -> bpy.types.Material:
    p = MATERIALS[name]
    mat = bpy.data.materials.new(f"syn_{name}")
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    info = nodes.new("ShaderNodeObjectInfo")
    links.new(info.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Metallic"].default_value = p["metallic"]
    bsdf.inputs["Anisotropic"].default_value = p["anisotropic"]
    fac = _texture(nodes, links, p["texture"])
    if fac is None:
        links.new(info.outputs["Alpha"], bsdf.inputs["Roughness"])
    else:  # roughness = object roughness * (0.75 .. 1.25 from the texture)
        scale = nodes.new("ShaderNodeMapRange")
        scale.inputs["To Min"].default_value = 0.75
        scale.inputs["To Max"].default_value = 1.25
        links.new(fac, scale.inputs["Value"])
        mul = nodes.new("ShaderNodeMath")
        mul.operation = "MULTIPLY"
        mul.use_clamp = True
        links.new(info.outputs["Alpha"], mul.inputs[0])
        links.new(scale.outputs["Result"], mul.inputs[1])
        links.new(mul.outputs["Value"], bsdf.inputs["Roughness"])
    return mat


def build_all() -> dict[str, bpy.types.Material]:
    return {name: build_material(name) for name in MATERIALS}
