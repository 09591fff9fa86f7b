"""`nitro serve`: an OpenAI-compatible HTTP API over one built model, on FastAPI + uvicorn."""
