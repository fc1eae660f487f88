"""The Envoy ext_proc adapters: the router-level (downstream) and per-attempt (upstream) processors."""
