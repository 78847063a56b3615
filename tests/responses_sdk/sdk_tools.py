"""The official OpenAI Python SDK calling a client tool through chatstream's Responses API.

Run by tests/responses_sdk.rs against an example whose model is the fake OpenAI server: it
calls `get_weather` with {"city": "Paris"} when the request offers it, and answers "It is
sunny in Paris." once the tool's result is in (or when no tool is offered). Prints one
`ok <check>` line per check; any failure raises (non-zero exit).
"""

import json
import os
import sys

from sdk_clients import client, ok, other

MODEL = os.environ.get("MODEL", "fake-model")
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
ANSWER = "It is sunny in Paris."


# The model's call comes back as a function_call item, and the response completes.
r = client.responses.create(model=MODEL, input="Weather in Paris?", tools=TOOLS)
assert r.status == "completed", r
calls = [i for i in r.output if i.type == "function_call"]
assert len(calls) == 1 and calls[0].name == "get_weather", r.output
assert json.loads(calls[0].arguments) == {"city": "Paris"}, calls[0]
assert calls[0].call_id.startswith("call_"), calls[0]
assert r.output_text == "", r.output_text
stored = other.responses.retrieve(r.id)
assert stored.output == r.output, (stored.output, r.output)

# The client runs the tool and answers with its output; the conversation comes from the
# store, so the model sees its own call and the result.
result = {"type": "function_call_output", "call_id": calls[0].call_id, "output": json.dumps({"temperature_c": 21})}
r2 = other.responses.create(model=MODEL, previous_response_id=r.id, tools=TOOLS, input=[result])
assert r2.status == "completed" and r2.output_text == ANSWER, r2
items = list(other.responses.input_items.list(r2.id))
assert [i.type for i in items] == ["function_call_output"], items
ok("tool call")

# Streamed, through the helper: the argument deltas add up to the final item's arguments.
with client.responses.stream(model=MODEL, input="And now?", tools=TOOLS) as stream:
    kinds = []
    args = ""
    for e in stream:
        kinds.append(e.type)
        if e.type == "response.function_call_arguments.delta":
            args += e.delta
    final = stream.get_final_response()
items = [i for i in final.output if i.type == "function_call"]
assert len(items) == 1 and items[0].arguments == args, (final.output, args)
assert json.loads(args) == {"city": "Paris"}, args
assert kinds.index("response.output_item.added") < kinds.index("response.function_call_arguments.done"), kinds
assert kinds[-1] == "response.completed", kinds
ok("tool call stream")

# tool_choice "none": no tool is offered, the model answers in text.
r3 = client.responses.create(model=MODEL, input="Weather?", tools=TOOLS, tool_choice="none")
assert [i.type for i in r3.output] == ["message"] and r3.output_text == ANSWER, r3
ok("tool choice none")

print("all python responses tool checks passed", file=sys.stderr)
if os.environ.get("CHECK_CHAT") != "1":
    sys.exit(0)  # queue_worker's /v1/chat/completions is seed 003's, not OpenAI's

# The same round through chat completions, streamed: the tool_calls deltas add up to the
# call, and the client sends it back with the tool's result.
CHAT_TOOLS = [{"type": "function", "function": {k: v for k, v in TOOLS[0].items() if k != "type"}}]
question = {"role": "user", "content": "Weather in Paris?"}
chunks = list(client.chat.completions.create(model=MODEL, messages=[question], tools=CHAT_TOOLS, stream=True))
deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
assert len(deltas) == 1 and deltas[0].index == 0 and deltas[0].function.name == "get_weather", deltas
assert json.loads(deltas[0].function.arguments) == {"city": "Paris"}, deltas
assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls", chunks
said = {
    "role": "assistant",
    "content": None,
    "tool_calls": [{"id": deltas[0].id, "type": "function", "function": {"name": "get_weather", "arguments": deltas[0].function.arguments}}],
}
result = {"role": "tool", "tool_call_id": deltas[0].id, "content": json.dumps({"temperature_c": 21})}
c = client.chat.completions.create(model=MODEL, messages=[question, said, result], tools=CHAT_TOOLS)
assert c.choices[0].message.content == ANSWER and c.choices[0].finish_reason == "stop", c
c = client.chat.completions.create(model=MODEL, messages=[question], tools=CHAT_TOOLS)
assert c.choices[0].finish_reason == "tool_calls" and c.choices[0].message.content is None, c
assert c.choices[0].message.tool_calls[0].function.name == "get_weather", c
ok("chat tool call")
print("all python tool checks passed", file=sys.stderr)
