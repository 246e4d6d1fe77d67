"""The only code that imports ``bpy``; it runs inside render-worker subprocesses.

``presets`` and ``raster`` import only numpy and are shared with the host side.
"""
