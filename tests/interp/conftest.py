from tests.llm_server import llm_server  # noqa: F401  (the scripted OpenAI-compatible server fixture)
