"""Hostile manifests: the walkthrough's own, mutated, through parse + validate + build (pure, no Envoy).

Whatever the input, the outcome is a model or one ResourceError line under 300
characters - never a traceback, never a hang. Mutations are drawn from a fixed
seed, so a failure names a case that can be replayed.
"""

from __future__ import annotations

import copy
import random
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml

from meshy.local import topology
from meshy.local.build import Inputs, build_mesh
from meshy.local.release import release_of
from meshy.local.resources import ResourceError, ResourceSet, parse_documents
from meshy.render import RenderOptions, render
from meshy.versions import load_matrix

SEED = 20261128
CASES = 240
# Generous: a case takes milliseconds; this only tells a hang from slowness on a shared machine.
SECONDS_PER_CASE = 2.0
TEMPLATES = (
    "services/minimal-service.yaml.j2",
    "services/minimal-service-v2.yaml.j2",
    "services/bounced-service.yaml.j2",
    "istio/services-gateway.yaml.j2",
    "istio/minimal-virtualservice.yaml.j2",
    "istio/minimal-destinationrule.yaml.j2",
    "istio/minimal-virtualservice-split.yaml.j2",
    "istio/bounced-virtualservice-retries.yaml.j2",
    "istio/egress-gateway.yaml.j2",
    "istio/egress-virtualservice.yaml.j2",
    "istio/service-entry.yaml.j2",
)
PAIR = load_matrix()[-1]
RELEASE = release_of(PAIR.istio)
ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    65536,
    2**63,
    1e308,
    0.5,
    "",
    " ",
    "0",
    "1.5",
    "-5s",
    "0ms",
    "0.1ms",
    "100000000000000000h",
    "../../escape",
    "a\nb",
    "tab\there",
    "nul\x00",
    "\u202eevil",
    "ünïcødé",
    "😀",
    "*",
    "a" * 70_000,
    [],
    [1, [2, [3]]],
    {},
    {"exact": 1},
    {"nested": {"deeper": {"deepest": "x"}}},
]


def walkthrough_documents() -> list[dict[str, Any]]:
    options = RenderOptions(split={"v1": 50, "v2": 50})
    return [d for t in TEMPLATES for d in yaml.safe_load_all(render(t, PAIR, options)) if d]


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside value (keys and list indexes)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, prefix + (index,))
    return found


def parent_of(document: Any, path: tuple) -> Any:
    for step in path[:-1]:
        document = document[step]
    return document


def mutate(documents: list[dict[str, Any]], rng: random.Random) -> str | bytes:
    """One mutation of one document, as the text a user would apply."""
    docs = copy.deepcopy(documents)
    target = rng.randrange(len(docs))
    path = rng.choice([p for p in paths(docs[target]) if p])
    parent, key = parent_of(docs[target], path), path[-1]
    kind = rng.choice(["drop", "retype", "retype", "wrap", "rename", "duplicate-text", "truncate-text", "encoding"])
    if kind == "drop":
        del parent[key]
    elif kind == "retype":
        parent[key] = copy.deepcopy(rng.choice(ODD_VALUES))
    elif kind == "wrap":
        parent[key] = rng.choice([[parent[key]], {"value": parent[key]}])
    elif kind == "rename" and isinstance(parent, dict):
        parent[rng.choice(["x", "Name", "spec", "héllo", 7, None])] = parent.pop(key)
    text = yaml.safe_dump_all(docs, allow_unicode=True, sort_keys=False)
    if kind == "duplicate-text":
        lines = text.splitlines()
        index = rng.randrange(len(lines))
        return "\n".join(lines[: index + 1] + [lines[index]] + lines[index + 1 :])
    if kind == "truncate-text":
        return text[: rng.randrange(len(text))]
    if kind == "encoding":
        return rng.choice(
            [text.encode("utf-16"), text.encode("utf-8")[:-1] + b"\xff", text.encode("latin-1", "replace")]
        )
    return text


def feed(data: str | bytes) -> str | None:
    """parse + validate + build as local.apply does; the refusal message, or None when accepted."""
    try:
        resources = ResourceSet().applied(parse_documents(data, "mutated.yaml", RELEASE))
        layout = topology.Layout()
        pods, _ = topology.pods(resources, {}, layout)
        build_mesh(Inputs(resources, pods, topology.gateways(layout), {}, RELEASE))
    except ResourceError as error:
        return str(error)
    return None


@contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Interrupt a hang instead of waiting for it (SIGALRM; the tests run on Linux)."""

    def expire(signum, frame):
        raise TimeoutError(f"{what} did not finish within {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_one_line(message: str) -> None:
    assert "\n" not in message and "\r" not in message, message
    assert len(message) < 300, message
    assert message.isprintable(), message


def test_the_walkthrough_itself_is_accepted():
    text = yaml.safe_dump_all(walkthrough_documents(), sort_keys=False)
    assert feed(text) is None


def test_mutated_walkthrough_manifests_give_one_line_or_a_model():
    documents = walkthrough_documents()
    rng = random.Random(SEED)
    refused = 0
    for case in range(CASES):
        data = mutate(documents, rng)
        with deadline(SECONDS_PER_CASE, f"case {case}"):
            message = feed(data)  # any other exception fails the test with its traceback
        if message is not None:
            refused += 1
            assert_one_line(message)
    # Most mutations break a rule; if nearly none were refused, validation is not running.
    assert refused > CASES // 2


BASE = """apiVersion: apps/v1
kind: Deployment
metadata: {name: NAME}
spec:
  replicas: REPLICAS
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: minimal-service:v1
          ports: [{containerPort: PORT}]
          env: [{name: ENV, value: "1"}]
"""


def deployment(name: str = "web", replicas: str = "1", port: str = "9090", env: str = "DEBUG") -> str:
    return BASE.replace("NAME", name).replace("REPLICAS", replicas).replace("PORT", port).replace("ENV", env)


def route(extra: str, host: str = "web", weight: str = "100") -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec:\n"
        f"  hosts: ['{host}']\n  http:\n    - route: [{{destination: {{host: web}}, weight: {weight}}}]\n{extra}"
    )


def bomb() -> str:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*{'a' if level == 1 else f'l{level - 1}'}"] * 10) + "]")
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (deployment(name="'../../escape'"), "metadata.name must be a DNS-1123 subdomain"),
        (deployment(name="Web"), "metadata.name must be a DNS-1123 subdomain"),
        (deployment(replicas="201"), "spec.replicas must be an integer from 0 to 200"),
        (deployment(replicas="'2'"), "spec.replicas must be an integer from 0 to 200, not '2'"),
        (deployment(port="0"), "containerPort must be an integer from 1 to 65535"),
        (deployment(port="70000"), "containerPort must be an integer from 1 to 65535"),
        (deployment(env="A-B"), "env[0].name must be a C identifier"),
        (deployment().replace('value: "1"', "value: 'it''s \"x\"'"), "env[0].value must not hold both ' and \""),
        (deployment(env='"A\\nB"'), "env[0].name must be a C identifier"),
        (deployment() + "    extra: 1\n", "field spec.template.extra is not supported locally"),
        (route("      timeout: 0.5ms\n"), "timeout must be at least 1ms"),
        (route("      timeout: 1.0001s\n"), "timeout must be whole milliseconds"),
        (
            route("      fault: {abort: {httpStatus: 503, percentage: {value: 101}}}\n"),
            "must be a number from 0 to 100",
        ),
        (route("      fault: {abort: {percentage: {value: 10}}}\n"), "fault.abort.httpStatus is required"),
        (route("", weight="-1"), "weight must be an integer from 0 to 2147483647"),
        (route("", host=""), "hosts[0] must be a host name"),
        (route("", host="a\\nb"), "hosts[0] must be a host name"),
        (route("      retries: {attempts: 2, perTryTimeout: 0s}\n"), "perTryTimeout must be at least 1ms"),
        (route("      match: [{uri: {regex: '(?=x)'}}]\n"), "is not a regular expression RE2 (Envoy's engine) accepts"),
        (route("      headers: {request: {set: {x-a: '50%'}}}\n"), "must write a literal % as %%"),
        ("a: 1\na: 2\n", "key 'a' appears twice in one mapping (line 2)"),
        (deployment().replace("  replicas: 1\n", "  replicas: 1\n  replicas: 2\n"), "key 'replicas' appears twice"),
        (bomb(), "expands to more than 100000 values"),
        ("a:\n" + "".join("  " * i + f"  k{i}:\n" for i in range(80)), "nests deeper than 64 levels"),
        ("[" * 5000 + "]" * 5000, "is not valid YAML at line 1"),
        (deployment().encode("utf-16"), "is UTF-16 text; save it as UTF-8"),
        (b"kind: \xff\xfe\xfa", "is not UTF-8 text (byte 6 cannot be decoded)"),
        ("kind: [List]\n", "kind ['List'] is not supported"),
        ("- a\n- b\n", "a manifest must be a mapping"),
    ],
)
def test_hostile_inputs_are_refused_in_one_line(data, fragment):
    with deadline(SECONDS_PER_CASE, "the case"):
        message = feed(data)
    assert message is not None, "accepted"
    assert_one_line(message)
    assert fragment in message


def test_a_refusal_quoting_long_names_stays_one_short_line():
    name, host = "a" * 250, ".".join(["b" * 60] * 4)
    text = (
        deployment(name=name)
        + "---\n"
        + route("", host="web").replace("host: web}", f"host: {host}, subset: s}}").replace("name: vs", f"name: {name}")
    )
    message = feed(text)
    assert message is not None
    assert_one_line(message)
    assert message.startswith(f"VirtualService default/{name[:20]}") and message.endswith(
        "apply the DestinationRule first"
    )
