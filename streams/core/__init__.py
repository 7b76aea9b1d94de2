"""The pure floor of the mirror: standard library only, no I/O.

Everything may import it; it imports nothing of ours outside this package.
"""
