"""focalbench: losses, matching costs and calibration for object detection, swept."""

__version__ = "0.1.0"
