"""Domain readers, registered by name: ``image``, ``tiles``, ``dicom``, ``raster``, ``wsi``."""
from domainclip.core.registry import import_submodules
from domainclip.readers.base import READERS, read, read_record, register_reader

import_submodules(__name__, __path__)  # every module registers itself: a new reader is one new file

__all__ = ["READERS", "read", "read_record", "register_reader"]
