"""Sans-I/O media formats: ISO-BMFF boxes, fragmented MP4 and CMAF chunks, codec strings."""
