"""Inference backends behind one small interface, one module each (see base.py), imported lazily."""

from __future__ import annotations

from .base import GraphSession, available_backends, open_graph

__all__ = ["GraphSession", "available_backends", "open_graph"]
