"""The README's walk with curl works verbatim: every curl command in it,
sent in order to a real service, gets the status its ``# →`` comment says."""

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"
#: The walk: from its heading up to the next section at its level.
WALK = re.compile(r"^## A walk with curl\n(.*?)^## ", re.S | re.M)
SHELL_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
EXPECTED = re.compile(r"^# → (\d{3})\b")


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: str | None
    expected: int | None = None


def curl_calls(block: str) -> list[Call]:
    """The curl commands of a shell block (a line continued by ``\\`` or by
    an open quote is one command), each with the status of the first
    ``# → NNN`` comment after it."""
    calls: list[Call] = []
    command = ""
    for line in block.splitlines():
        if not command and line.startswith("#"):
            found = EXPECTED.match(line)
            if found and calls and calls[-1].expected is None:
                calls[-1].expected = int(found.group(1))
            continue
        command += line.removesuffix("\\") + "\n"
        try:
            words = shlex.split(command, comments=True)
        except ValueError:  # a quote still open: the command goes on
            continue
        if line.endswith("\\"):
            continue
        if words and words[0] == "curl":
            calls.append(parse_curl(words[1:]))
        command = ""
    return calls


def parse_curl(words: list[str]) -> Call:
    method, headers, body, url = None, {}, None, None
    options = iter(words)
    for word in options:
        if word == "-X":
            method = next(options)
        elif word == "-H":
            name, _, value = next(options).partition(":")
            headers[name] = value.strip()
        elif word == "-d":
            body = next(options)
        elif word.startswith("-"):
            assert set(word[1:]) <= set("siN"), f"the walk uses a curl option this test does not know: {word}"
        else:
            url = word
    assert url is not None and url.startswith("localhost:8080/"), url
    return Call(method or ("POST" if body is not None else "GET"), url.removeprefix("localhost:8080"), headers, body)


def walk() -> list[Call]:
    [section] = WALK.findall(README.read_text())
    return [call for block in SHELL_BLOCK.findall(section) for call in curl_calls(block)]


def test_the_walk_shows_a_creation_a_read_and_a_refusal():
    calls = walk()
    assert len(calls) >= 8
    assert {201, 200, 422} <= {call.expected for call in calls}


async def test_every_curl_call_of_the_walk_gets_the_status_the_readme_shows(client):
    for call in walk():
        response = await client.request(call.method, call.path, headers=call.headers, data=call.body)
        text = await response.text()
        if call.expected is not None:
            assert response.status == call.expected, (call, text)
        else:
            assert response.status < 400, (call, text)


PYTHON_BLOCK = re.compile(r"^## From Python\n.*?^```python\n(.*?)^```", re.S | re.M)


async def test_the_python_example_runs_as_written(client, capsys):
    [example] = PYTHON_BLOCK.findall(README.read_text())
    source = example.replace("http://127.0.0.1:8080", str(client.make_url("")).rstrip("/"))
    body = "\n".join("    " + line for line in source.splitlines())
    namespace: dict = {}
    exec(f"async def example():\n{body}\n", namespace)

    await namespace["example"]()

    assert capsys.readouterr().out == "12.50\n"
