"""`nitro serve`: an OpenAI-compatible HTTP API and a chat page over built models, on FastAPI + uvicorn."""
