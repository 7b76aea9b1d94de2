"""Cached Faust tables of the latest entity state (to come; see the README).

This package is this project's ``tables``, not PyTables, which installs a module of that name.
"""
