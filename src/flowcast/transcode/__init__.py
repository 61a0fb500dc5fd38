"""Sources, ladder and encoder profiles -> FFmpeg arguments; process supervision."""
