"""What the Python SDK scripts share: a client of OPENAI_BASE_URL, and one of a second
gateway instance (OPENAI_BASE_URL_2, when given), which serves the resumes, polls, cancels
and continuations of responses created on the first."""

import os

from openai import OpenAI

client = OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key=os.environ.get("OPENAI_API_KEY", "sk-test"))
other = OpenAI(base_url=os.environ.get("OPENAI_BASE_URL_2") or os.environ["OPENAI_BASE_URL"], api_key=client.api_key)


def ok(name):
    """One line per check passed, which tests/responses_sdk.rs looks for."""
    print(f"ok {name}", flush=True)
