"""Rendering (moderngl offscreen), contact sheets and video writing."""

from .renderer import Camera, Renderer, renderer_for_model, vertex_normals_fn

__all__ = ["Camera", "Renderer", "renderer_for_model", "vertex_normals_fn"]
