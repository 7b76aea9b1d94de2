"""Entities declared for tests only (loaded by workers through ENTITY_MODULES)."""
