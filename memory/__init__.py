"""memory: filled in by its part of wave 1."""

__all__: list[str] = []
