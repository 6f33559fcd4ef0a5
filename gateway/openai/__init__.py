"""The OpenAI API front: OpenAI's chat and completions endpoints, served by calling the gateway over mTLS.

Envoy's JSON transcoder cannot serve this API: whether an answer is one JSON object or server-sent events
depends on a field of the body, OpenAI streams end with `data: [DONE]`, and a failure after the first
token must still reach the client as an event. So an ASGI app (FastAPI under uvicorn) takes Envoy's OpenAI
routes and calls meshserve.gateway.v1 like any other client: admission, priorities, deadlines,
cancellation and traces are the gateway's, unchanged.
"""
