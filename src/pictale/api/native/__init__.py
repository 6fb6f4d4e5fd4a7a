"""pictale's own REST API under /v1 (avatars, keys)."""
