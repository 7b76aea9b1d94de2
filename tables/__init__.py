"""The read side: cached Faust tables of the latest entity state, and the HTTP pages over them
and over the SQL store (``api``: the replies, ``views``: the Faust pages, ``cache``: the tables).

This package is this project's ``tables``, not PyTables, which installs a module of that name.
"""
