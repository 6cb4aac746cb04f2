"""Test support: imports anything, is imported by nothing in newsletter; needs the `test` extra."""

from __future__ import annotations
