"""Other protocols at the HTTP edge: each module here has a FastAPI `router` (app.py includes
every one) that maps its protocol's requests onto the same internal types as
/v1/chat/completions (validation.engine_request, runtime plan_chat, generation.start /
collect, the SSE and delta streams) and its answers and errors back into the protocol's own
shapes. No module here generates anything itself: one scheduler, one generation path."""
