"""latentpress: clean and compress image archives with learned models, on Apache Beam."""

__version__ = "0.2.0"


# The Python API (models load at the first call; TensorFlow is not imported here).
from latentpress.api import compress, decompress, decompress_image  # noqa: E402


def _register_pillow_plugin() -> None:
    try:
        from latentpress.pillow_plugin import register
    except ImportError:  # Pillow missing: the API still works on arrays
        return
    register()


_register_pillow_plugin()

__all__ = ["__version__", "compress", "decompress", "decompress_image"]
