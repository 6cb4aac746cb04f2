"""Subscriber lists, lifecycle, signed links and suppression."""
