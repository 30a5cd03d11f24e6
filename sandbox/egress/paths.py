"""Where a sandbox finds its egress proxy and relay (bound there by sandbox/bubblewrap.py)."""

from pathlib import Path

SOCKET_IN_SANDBOX = Path("/run/matrix/egress.sock")
BRIDGE_IN_SANDBOX = Path("/run/matrix/egress-bridge.py")
BRIDGE = Path(__file__).resolve().parent / "bridge.py"
