"""Beam jobs, one per module, each with ``run(argv)`` and a ``__main__``."""
