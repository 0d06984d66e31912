"""lockerd: the daemon inside a smart parcel-locker cabinet."""

__version__ = "0.1.0"
