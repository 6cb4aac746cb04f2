"""Application services: the one layer every door (CLI, staff console, HTTP API) calls.

Each service takes plain arguments and built objects (settings, database engine, clock,
transport, progress callback); each one that changes state takes an `Actor`, and each one that
lists people a `Scope`. A service owns its transaction: the storage functions it calls take a
session and do not commit.
"""
