"""Entity models: the declarative base, the registry and the SQL store.

This package is this project's ``models`` (not the unrelated PyPI package of that name).
"""

from models.base import Base, MirroredEntity
from models.registry import EntitySpec, Registry, default_registry

__all__ = ["Base", "EntitySpec", "MirroredEntity", "Registry", "default_registry"]
