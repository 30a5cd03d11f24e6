"""``agent.run``: a bounded tool-using loop against an OpenAI-compatible endpoint.

The run is a session job: a sandbox host starts its MCP server isolated exactly as for
``tool.run`` (sandbox/host/session.py), then, instead of calling one tool, hands the
ready session to :class:`~sandbox.agent.loop.AgentLoop`, which lets the model call the
server's tools turn by turn until it answers or a limit stops it.
"""
