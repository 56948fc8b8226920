"""latentpress: clean and compress image archives with learned models, on Apache Beam."""

__version__ = "0.1.0"
