"""A cache that only grows: the leak the Python-frames test looks for."""
CACHE = []


def leaky_cache_insert(size):
    CACHE.append(bytes(size))  # leak: bytes over 512 B come from malloc
