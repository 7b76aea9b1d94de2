"""The stream side: the Faust app and settings, the agents and the checkpoint, dead letters and
redrive, metrics, the MSK adapter; the pure core in ``streams.core``, the command line in
``streams.cli``."""
