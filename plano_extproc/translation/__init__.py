"""API translation between client APIs and provider APIs. Pure: bytes and dicts in, bytes and dicts out."""
