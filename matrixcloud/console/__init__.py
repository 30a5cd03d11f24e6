"""The web console: server-rendered pages for workspace users.

Views are thin: a form, the actor (``accounts.principals.actor_for``, exactly as the
API scopes requests), one service or selector of the domain apps, a template. Live
parts (events, progress) use the API's own SSE endpoints from a little plain JS.
"""
