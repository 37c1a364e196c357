"""FLAME layer: model format, forward pass, safe converter and the procedural stand-in head."""

from .model import JOINT_NAMES, FlameModel

__all__ = ["FlameModel", "JOINT_NAMES"]
