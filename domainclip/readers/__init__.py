"""Domain readers, registered by name: ``image``, ``tiles``, ``dicom``, ``raster``, ``wsi``."""
from domainclip.readers import dicom, image, raster, wsi  # noqa: F401 - registration side effect
from domainclip.readers.base import READERS, read, read_record, register_reader

__all__ = ["READERS", "read", "read_record", "register_reader"]
