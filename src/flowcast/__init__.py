"""flowcast: a self-hostable streaming stack (ingest -> FFmpeg ladder -> CMAF -> LL-HLS/LL-DASH origin)."""

__version__ = "0.1.0"
