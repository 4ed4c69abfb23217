"""Drives antwort's code_interpreter and containers with the official OpenAI Python SDK, as a
user would.

Usage: openai_sdk_code_interpreter.py BASE_URL API_KEY MODEL

The model's turns are scripted through `instructions` (the scripted backend reads a `SCRIPT:`
system message): first a `python` tool call running `print(6*7)` in the sandbox, then a text
answer. Each call goes through the SDK's own parsing; every response and stream event is also
validated strictly against the SDK's pydantic types (the SDK itself parses leniently, so a shape
it would reject in strict mode could otherwise pass unseen). Then the containers API: a container
made by the SDK, a file uploaded into it, code (run by the model through the container) that reads
that file and writes another, the listing with both sources, the written file's content, deletes.

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


CONTAINER_CODE = (
    "rows = open('data.csv').read().splitlines()\n"
    "print(len(rows), rows[1])\n"
    "with open('summary.txt', 'w') as out:\n"
    "    out.write('rows=%d' % len(rows))"
)
CSV = b"name,value\nalpha,1\nbeta,2\n"


def strict_object(kind, model, obj):
    """`{kind, errors}` of a strict validation of an SDK object against its own type."""
    return {"kind": kind, "errors": strict_errors(model.model_validate, obj.to_dict())}


def containers(client, model):
    """The containers API through the SDK, with code the model runs in the container."""
    from openai.types import ContainerCreateResponse, ContainerRetrieveResponse
    from openai.types.containers import FileCreateResponse, FileListResponse

    strict = []
    created = client.containers.create(
        name="e2e", expires_after={"anchor": "last_active_at", "minutes": 20}
    )
    strict.append(strict_object("container", ContainerCreateResponse, created))
    uploaded = client.containers.files.create(created.id, file=("data.csv", CSV))
    strict.append(strict_object("container.file", FileCreateResponse, uploaded))
    directive = "SCRIPT: " + json.dumps(
        {
            "turns": [
                {"tool_calls": [{"name": "python", "arguments": {"code": CONTAINER_CODE}}]},
                {"content": "The file has 3 rows."},
            ]
        }
    )
    response = client.responses.create(
        model=model,
        instructions=directive,
        input="How many rows does data.csv have?",
        tools=[{"type": "code_interpreter", "container": created.id}],
        include=INCLUDE,
    )
    call = response.output[0]
    files = list(client.containers.files.list(created.id))
    for listed in files:
        strict.append(strict_object("container.file (list)", FileListResponse, listed))
    written = [f for f in files if f.path.endswith("summary.txt")]
    content = (
        client.containers.files.content.retrieve(written[0].id, container_id=created.id).read()
        if written
        else None
    )
    retrieved = client.containers.retrieve(created.id)
    strict.append(strict_object("container (retrieve)", ContainerRetrieveResponse, retrieved))
    listed_ids = [c.id for c in client.containers.list()]
    client.containers.files.delete(uploaded.id, container_id=created.id)
    after_delete = sorted(f.path for f in client.containers.files.list(created.id))
    client.containers.delete(created.id)
    try:
        client.containers.retrieve(created.id)
        gone = "still there"
    except openai.NotFoundError:
        gone = "not found"
    return {
        "container": {"id": created.id, "object": created.object, "name": created.name,
                      "status": created.status},
        "uploaded": {"id": uploaded.id, "path": uploaded.path, "bytes": uploaded.bytes,
                     "source": uploaded.source},
        "call": {"container_id": call.container_id, "status": call.status,
                 "logs": [getattr(o, "logs", None) for o in (call.outputs or [])]},
        "files": sorted([f.path, f.source] for f in files),
        "written_content": content.decode() if content is not None else None,
        "listed": created.id in listed_ids,
        "after_delete": after_delete,
        "after_container_delete": gone,
        "strict": [s for s in strict if s["errors"]],
    }


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
        report["containers"] = containers(client, model)
    except Exception:  # noqa: BLE001 -- everything the SDK raises goes into the report
        report["error"] = traceback.format_exc()
    report["problems"] = problems
    print(json.dumps(report, indent=1))
    if "error" in report:
        sys.exit(2)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
