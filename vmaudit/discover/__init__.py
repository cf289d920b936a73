"""Finding images: datastore walks, formats from content, descriptors, snapshot chains, locks."""

from vmaudit.discover.walk import DiscoveryResult, discover

__all__ = ["DiscoveryResult", "discover"]
