"""Delivery: message building, transports and the sending engine."""
