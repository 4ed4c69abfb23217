"""Drives antwort's code_interpreter with the official OpenAI Python SDK, as a user would.

Usage: openai_sdk_code_interpreter.py BASE_URL API_KEY MODEL

The model's turns are scripted through `instructions` (the scripted backend reads a `SCRIPT:`
system message): first a `python` tool call running `print(6*7)` in the sandbox, then a text
answer. Each call goes through the SDK's own parsing; every response and stream event is also
validated strictly against the SDK's pydantic types (the SDK itself parses leniently, so a shape
it would reject in strict mode could otherwise pass unseen).

Prints one JSON report on stdout (what the SDK handed back: classes, fields, event types) and
exits 0 when the SDK-level checks hold, 1 when some failed (listed in `problems`), 2 when the SDK
raised (`error` holds the traceback). The Rust test (e2e/tests/openai_sdk.rs) checks the report.
"""

import json
import sys
import traceback

import openai
import pydantic
from openai import OpenAI
from openai.types.responses import (
    Response,
    ResponseCodeInterpreterToolCall,
    ResponseOutputMessage,
)

CODE = "print(6*7)"
ANSWER = "6 times 7 is 42."
DIRECTIVE = "SCRIPT: " + json.dumps(
    {
        "turns": [
            {"tool_calls": [{"name": "python", "arguments": {"code": CODE}}]},
            {"content": ANSWER},
        ]
    }
)
TOOLS = [{"type": "code_interpreter", "container": {"type": "auto"}}]
INCLUDE = ["code_interpreter_call.outputs"]
QUESTION = "What is 6 times 7? Use Python."

problems = []


def check(condition, what):
    if not condition:
        problems.append(what)


def strict_errors(validate, value):
    """Errors of a strict pydantic validation of `value` (the SDK's lenient parse as sent)."""
    try:
        validate(value)
        return []
    except pydantic.ValidationError as error:
        return [
            {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in error.errors()
        ]


def describe_response(response):
    """What a user sees of a `Response`: classes, the call item, the text."""
    report = {
        "class": type(response).__name__,
        "id": response.id,
        "status": response.status,
        "output_types": [item.type for item in response.output],
        "output_classes": [type(item).__name__ for item in response.output],
        # isinstance, not the name: `responses.stream` hands back Parsed* subclasses.
        "is_typed": {
            "Response": isinstance(response, Response),
            "ResponseCodeInterpreterToolCall": isinstance(
                response.output[0], ResponseCodeInterpreterToolCall
            ),
            "ResponseOutputMessage": isinstance(response.output[-1], ResponseOutputMessage),
        },
        "output_text": response.output_text,
        "tool_types": [tool.type for tool in response.tools],
        "strict_errors": strict_errors(Response.model_validate, response.to_dict()),
    }
    calls = [i for i in response.output if isinstance(i, ResponseCodeInterpreterToolCall)]
    if calls:
        call = calls[0]
        report["call"] = {
            "id": call.id,
            "status": call.status,
            "code": call.code,
            "container_id": call.container_id,
            "outputs": None
            if call.outputs is None
            else [
                {
                    "class": type(out).__name__,
                    "type": out.type,
                    "logs": getattr(out, "logs", None),
                }
                for out in call.outputs
            ],
        }
    check(isinstance(response, Response), "the response is not parsed as a Response")
    return report


def plain(client, model):
    response = client.responses.create(
        model=model, instructions=DIRECTIVE, input=QUESTION, tools=TOOLS, include=INCLUDE
    )
    report = describe_response(response)
    check(
        isinstance(response.output[0], ResponseCodeInterpreterToolCall),
        "create: output[0] is not a ResponseCodeInterpreterToolCall",
    )
    check(
        isinstance(response.output[-1], ResponseOutputMessage),
        "create: the last output item is not a ResponseOutputMessage",
    )
    return response, report


def streamed(client, model):
    events = []
    completed = None
    code_done = None
    strict = []
    stream = client.responses.create(
        model=model,
        instructions=DIRECTIVE,
        input=QUESTION,
        tools=TOOLS,
        include=INCLUDE,
        stream=True,
    )
    for event in stream:
        events.append(
            {
                "type": event.type,
                "class": type(event).__name__,
                "sequence_number": event.sequence_number,
            }
        )
        # Against the class the SDK picked by `type` (the union has no pydantic discriminator,
        # so validating against it would list every member's errors).
        errors = strict_errors(type(event).model_validate, event.to_dict())
        if errors:
            strict.append({"type": event.type, "errors": errors})
        if event.type == "response.code_interpreter_call_code.done":
            code_done = event.code
        if event.type == "response.completed":
            completed = event.response
    report = {"events": events, "code_done": code_done, "strict_errors": strict}
    check(completed is not None, "stream: no response.completed event")
    if completed is not None:
        report["completed"] = describe_response(completed)
    return report


def helper_stream(client, model):
    """`client.responses.stream(...)`: the SDK accumulates the events into a response itself."""
    types = []
    with client.responses.stream(
        model=model, instructions=DIRECTIVE, input=QUESTION, tools=TOOLS, include=INCLUDE
    ) as stream:
        for event in stream:
            types.append(event.type)
        final = stream.get_final_response()
    return {"event_types": types, "final": describe_response(final)}


def main():
    base_url, api_key, model = sys.argv[1:4]
    report = {"sdk_version": openai.__version__}
    try:
        client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
        response, report["create"] = plain(client, model)
        report["stream"] = streamed(client, model)
        report["helper_stream"] = helper_stream(client, model)
        retrieved = client.responses.retrieve(response.id)
        report["retrieve"] = describe_response(retrieved)
        with_outputs = client.responses.retrieve(response.id, include=INCLUDE)
        report["retrieve_include"] = describe_response(with_outputs)
    except Exception:  # noqa: BLE001 -- everything the SDK raises goes into the report
        report["error"] = traceback.format_exc()
    report["problems"] = problems
    print(json.dumps(report, indent=1))
    if "error" in report:
        sys.exit(2)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
