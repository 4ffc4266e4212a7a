"""Panels: draw() only lays out properties and operators; nothing here changes data."""

from .sidebar import classes

__all__ = ["classes"]
