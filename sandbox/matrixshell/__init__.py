"""MatrixShell: a per-workspace Python venv and working dir, and commands run in it.

Every process it starts (the venv's creation, pip, each command) runs in the same
isolation as sandboxed MCP servers (sandbox/isolation.py), with the workspace's
MatrixShell dir as the sandbox's scratch dir: the venv lives inside it, so the
isolation shows it and nothing else of the data dir. A command denylist
(:mod:`sandbox.matrixshell.denylist`) is a second line, not the protection.
"""
