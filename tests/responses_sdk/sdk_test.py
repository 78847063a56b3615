"""The official OpenAI Python SDK, unchanged, against chatstream's Responses API.

Run by tests/responses_sdk.rs with OPENAI_BASE_URL pointing at a running example. Prints
one `ok <check>` line per check; any failure raises (non-zero exit).
"""

import os
import sys
import time

import openai
from openai import OpenAI

from sdk_clients import client, ok, other

MODEL = os.environ.get("MODEL", "scripted")


def wait_final(rid, limit=30.0):
    deadline = time.monotonic() + limit
    while True:
        r = other.responses.retrieve(rid)
        if r.status not in ("queued", "in_progress"):
            return r
        assert time.monotonic() < deadline, f"{rid} still {r.status}"
        time.sleep(0.05)


# responses.create, plain
r = client.responses.create(model=MODEL, input="hello", instructions="be kind", metadata={"k": "v"})
assert r.status == "completed", r
assert r.object == "response" and r.id.startswith("resp_"), r
assert r.output_text and r.output[0].type == "message", r
assert r.usage is None or r.usage.total_tokens >= r.usage.output_tokens
assert r.metadata == {"k": "v"}, r.metadata
ok("create")

# responses.create, streamed
events = list(client.responses.create(model=MODEL, input="stream me", stream=True))
types = [e.type for e in events]
assert types[:2] == ["response.created", "response.in_progress"], types
assert types[-1] == "response.completed", types
numbers = [e.sequence_number for e in events]
assert numbers == sorted(set(numbers)), numbers
text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
assert text and text == events[-1].response.output_text, (text, events[-1].response)
ok("create stream")

# the responses.stream helper
with client.responses.stream(model=MODEL, input="helper") as stream:
    deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    final = stream.get_final_response()
assert final.status == "completed" and final.output_text == deltas, (final, deltas)
ok("stream helper")

# previous_response_id
r2 = client.responses.create(model=MODEL, input="and again", previous_response_id=r.id)
assert r2.status == "completed" and r2.previous_response_id == r.id, r2
ok("previous_response_id")

# input items
items = client.responses.input_items.list(r2.id)
assert [i.type for i in items.data] == ["message"], items
assert items.data[0].content[0].text == "and again", items
ok("input_items")

# background, a dropped connection, and retrieve(stream=True, starting_after=N)
bg = client.responses.create(model=MODEL, input="background", background=True)
assert bg.status == "queued" and bg.background, bg
seen = ""
last = None
first = client.responses.retrieve(bg.id, stream=True)
for e in first:
    last = e.sequence_number
    if e.type == "response.output_text.delta":
        seen += e.delta
        if len(seen) > 5:
            break
first.close()  # the connection drops mid-answer
assert last is not None and seen, (last, seen)
rest = other.responses.retrieve(bg.id, stream=True, starting_after=last)
resumed = list(rest)
assert resumed and resumed[0].sequence_number > last, (last, resumed[:1])
seen += "".join(e.delta for e in resumed if e.type == "response.output_text.delta")
assert resumed[-1].type == "response.completed", resumed[-1]
stored = wait_final(bg.id)
assert stored.status == "completed", stored
assert seen == stored.output_text, (seen, stored.output_text)
ok("background resume")

# cancel: cancelled, with the partial output and its usage; a second cancel is the same
bg = client.responses.create(model=MODEL, input="cancel me", background=True)
s = client.responses.retrieve(bg.id, stream=True)
for e in s:
    if e.type == "response.output_text.delta":
        break
s.close()
c = other.responses.cancel(bg.id)
assert c.status == "cancelled", c
assert c.output_text and c.usage.output_tokens > 0, c
again = client.responses.cancel(bg.id)
assert again.status == "cancelled" and again.output_text == c.output_text, again
done = client.responses.cancel(r.id)
assert done.status == "completed" and done.output_text == r.output_text, done
ok("cancel")

# delete
client.responses.delete(r2.id)
try:
    client.responses.retrieve(r2.id)
    raise AssertionError("a deleted response is still there")
except openai.NotFoundError as e:
    assert e.status_code == 404 and e.body["message"], e.body
ok("delete")

# error mapping
try:
    client.responses.create(model=MODEL, input=[{"type": "bogus_item"}])
    raise AssertionError("an unknown item type was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and e.body["param"] == "input[0].type", e.body
try:
    client.responses.retrieve("resp_unknown")
    raise AssertionError("an unknown id was found")
except openai.NotFoundError:
    pass
try:
    client.responses.create(model=MODEL, input="x" * 200_000)
    raise AssertionError("an oversized body was accepted")
except openai.APIStatusError as e:
    assert e.status_code == 413, e
if os.environ.get("CHECK_AUTH") == "1":
    bad = OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key="wrong-key")
    try:
        bad.responses.create(model=MODEL, input="x")
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401, e
    mine = client.responses.create(model=MODEL, input="mine")
    stranger = OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key=os.environ["OPENAI_API_KEY_OTHER_USER"])
    for call in (lambda: stranger.responses.retrieve(mine.id), lambda: stranger.responses.delete(mine.id)):
        try:
            call()
            raise AssertionError("another user's response was visible")
        except openai.NotFoundError:
            pass
    assert client.responses.retrieve(mine.id).output_text == mine.output_text
    ok("auth")
ok("errors")
print("all python checks passed", file=sys.stderr)
