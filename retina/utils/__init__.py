"""Small shared services: atomic file writes, device selection, drawing detections and the one
safe way to build objects from a config that came from a file."""
