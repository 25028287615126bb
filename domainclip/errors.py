"""Public import path of domainclip's user-facing errors (they live in ``domainclip.core.errors``)."""
from domainclip.core.errors import (
    USER_ERRORS,
    BundleError,
    CardError,
    ConfigError,
    DomainClipError,
    ReadError,
    one_line,
)

__all__ = ["USER_ERRORS", "BundleError", "CardError", "ConfigError", "DomainClipError", "ReadError", "one_line"]
