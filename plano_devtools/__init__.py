"""Development tools around the gateway, kept apart from the runtime package `plano_extproc`.

Local mock LLM providers, the local launcher behind `plano-extproc up` and `demo`, and a CPU
tritonserver for the Arch-Router contract tests. Nothing here is imported by `serve`.
"""
