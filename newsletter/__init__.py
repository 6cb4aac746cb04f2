"""Tailored e-journal digests for science-and-technology diplomats."""

from __future__ import annotations

__version__ = "0.1.0"
