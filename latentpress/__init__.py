"""latentpress: clean and compress image archives with learned models, on Apache Beam."""

__version__ = "0.2.0"
