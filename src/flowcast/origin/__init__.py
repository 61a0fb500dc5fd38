"""The HTTP origin: media store with publish/wait, blocking reload, chunked delivery, player kit."""
