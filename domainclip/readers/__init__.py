"""Domain readers, registered by name: ``image``, ``tiles``, ``dicom``, ``raster``."""
from domainclip.readers import dicom, image, raster  # noqa: F401 - registration side effect
from domainclip.readers.base import READERS, read, register_reader

__all__ = ["READERS", "read", "register_reader"]
