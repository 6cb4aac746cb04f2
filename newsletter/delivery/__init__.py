"""Delivery: the sending engine, claimed batches, the ledger, transports and bounce reports."""

from __future__ import annotations
