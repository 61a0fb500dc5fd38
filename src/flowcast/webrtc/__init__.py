"""Interactive mode: WebRTC (WHIP/WHEP), Pixel Streaming signalling, TURN."""
