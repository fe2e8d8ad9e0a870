"""The WebSocket gateway: holds client connections and relays their frames to the workers."""
