"""Unreal Pixel Streaming: a signalling server compatible with Epic's protocol and frontend
library, and a simulated streamer standing in for an Unreal Engine instance."""
