"""synthloop: synthetic images + deep active learning for industrial object detection.

Nothing happens at import time: no folders, no tracking URIs, no heavy imports.
"""

__version__ = "0.1.0"
