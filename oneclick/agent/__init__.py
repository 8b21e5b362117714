"""The context agent: runs inside every member, learns the context from the broker and
configures the member for its role. Depends on pydantic, httpx and cryptography only."""

import sys

# httpx imports its command line (click, rich, pygments) with itself wherever those are
# installed, as in the full oneclick-clusters environment the local provider's members run:
# about a fifth of the agent's start-up CPU, in every member, for a program it never runs.
# (None there: that import fails, and httpx expects it may. It holds in every process that
# imports this package, the controller's and the tests' too: none runs httpx's command line.)
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
