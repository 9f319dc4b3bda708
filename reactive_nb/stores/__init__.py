"""Storage backends (memory and Redis): cache, version counters and the change bus."""
