"""The engines behind the router: vLLM replicas, scripted replicas for tests, and remote OpenAI-compatible servers.

All of them speak the event protocol of `base`: `{"delta"}` events, then one final `{"done": True, ...}`.
"""
