"""latentpress: clean and compress image archives with learned models, on Apache Beam."""

__version__ = "0.2.0"


def compress(image, quality: float = 50.0, model: str = "codec") -> bytes:
    """A code file of ``image`` (path, PIL image or uint8 array); see ``latentpress.api``."""
    from latentpress.api import compress as _compress

    return _compress(image, quality, model)


def decompress(data: bytes, model: str | None = None):
    """The uint8 pixels of a code file; see ``latentpress.api``."""
    from latentpress.api import decompress as _decompress

    return _decompress(data, model)


def _register_pillow_plugin() -> None:
    try:
        from latentpress.pillow_plugin import register
    except ImportError:  # Pillow missing: the API still works on arrays
        return
    register()


_register_pillow_plugin()
