"""``python -m streams ...``: the operator's command line.

``main`` parses the commands (status, verify, rebuild, dlq, sample-events, show); ``operations``
holds what they do.
"""
