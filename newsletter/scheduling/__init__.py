"""Scheduling: the pure rules, plans in the database, the APScheduler jobs, the leader lock, digests."""

from __future__ import annotations
