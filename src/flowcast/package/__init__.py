"""Segmenter (samples -> parts -> segments) and the HLS/DASH renderers and parsers."""
