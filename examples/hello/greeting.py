"""A helper module of the app: it travels inside the bundle, by value."""

from __future__ import annotations


def greet(name: str, greeting: str = "Hello") -> str:
    """The sentence the app answers with."""
    name = name.strip() or "world"
    return f"{greeting}, {name}!"
