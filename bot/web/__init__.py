"""The web channel: trainees sign in with an invite link and practise in the browser.

Server-rendered pages over the same service and engine as every other channel; the engine
knows nothing of it. See ``docs/web.md``.
"""
