"""The context agent: runs inside every member, learns the context from the broker and
configures the member for its role. Depends on pydantic, httpx and cryptography only."""
