"""The stream side: the Faust app and settings, the agents and their batch lanes, dead letters and
redrive, metrics, the MSK adapter; the pure core in ``streams.core``, the command line in
``streams.cli``."""
