"""Placeholder package; filled by a later issue."""
