"""Scheduling: the pure rules, plans in the database, the APScheduler jobs, the leader lock, digests."""
