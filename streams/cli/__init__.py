"""``entity-mirror ...`` (``python -m streams ...``): the operator's command line.

``main`` parses the commands (status, verify, rebuild, dlq, sample-events, show); ``operations``
holds what they do; ``reports`` holds what they found, as the text people read and the JSON
scripts parse, with the exit codes.
"""
