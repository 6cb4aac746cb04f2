"""Who acts (`Actor`) and over which missions (`Scope`): plain values every service takes."""

from __future__ import annotations

from newsletter.actors import Actor, ActorKind, Scope

__all__ = ["Actor", "ActorKind", "Scope"]
