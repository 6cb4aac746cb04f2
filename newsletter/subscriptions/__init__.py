"""Subscriber lists, their lifecycle (signup, handover, erasure, bounces) and suppression."""

from __future__ import annotations
