"""zhangcolor serve's OpenAPI description is true to the server: every status a route answers is
declared with the body the server sends, and the bounds it keeps are stated. Schemathesis (an
OpenAPI fuzzer) sends every operation requests made from the description, valid and invalid,
and checks each answer against it."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from zhangcolor.constants import MAX_TEMPERATURE, MIN_PREVIEW_SIDE, MIN_TEMPERATURE
from zhangcolor.hints import MAX_POINTS
from zhangcolor.models import build_model
from zhangcolor.options import ModelConfig, TrainConfig
from zhangcolor.serve import ColorizeService, ServeConfig, create_app
from zhangcolor.serve.schema import ERROR

#: Answers schemathesis takes for valid requests: a request made from the description may still
#: name an upload that is not cached (404), bring bytes that are not an image (415) or of too
#: many pixels (413), or points outside the photo (422): none of these can a schema state.
VALID_BUT_REFUSED = ["2xx", "404", "413", "415", "422", "429", "503"]
#: Answers to invalid requests: the 4xx schemathesis expects, and 413 for a form of more parts
#: than the server reads (too_many_fields), which it refuses before it reads their values.
INVALID_REFUSED = ["400", "404", "405", "406", "413", "415", "422", "429"]


def guided_checkpoint(path):
    """A tiny eccv16 that takes colour points (random weights): the real network, points and
    all, behind every operation."""
    from zhangcolor.bins import load_bins
    from zhangcolor.checkpoint import save_model

    config = TrainConfig(model=ModelConfig(backbone="eccv16", width=0.125, hints=True))
    bins = {k: v.float() for k, v in load_bins().items()}
    save_model(path, build_model(config.model), config, bins, step=0)
    return path


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    model = guided_checkpoint(tmp_path_factory.mktemp("guided") / "guided.safetensors")
    config = ServeConfig(model=str(model), size=32, max_pixels=1_000_000, max_upload_mb=1)
    app = create_app(service=ColorizeService.load(config))
    fuzz = schemathesis.config.SchemathesisConfig.from_dict(
        {
            "generation": {"mode": "all", "max-examples": 25},
            "checks": {
                "positive_data_acceptance": {"expected-statuses": VALID_BUT_REFUSED},
                "negative_data_rejection": {"expected-statuses": INVALID_REFUSED},
            },
        }
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=fuzz)


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_operation_answers_as_its_description_says(api_schema, mode):
    """Each operation, 25 requests of each mode: every check schemathesis runs by default (no
    5xx, statuses, content types, headers and bodies as declared, invalid data refused, 405s
    with Allow, ...)."""
    from schemathesis.generation import GenerationMode

    operations = {op.label: op for op in (r.ok() for r in api_schema.get_all_operations())}
    assert len(operations) == 6, sorted(operations)
    nothing_to_negate = []
    for label, operation in operations.items():
        strategy = operation.as_strategy(generation_mode=GenerationMode(mode))

        @given(case=strategy)
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate()

        try:
            check()
        except Unsatisfiable:  # an operation without parameters has no invalid request
            nothing_to_negate.append(label)
    assert sorted(nothing_to_negate) == (
        [] if mode == "positive" else ["GET /api/model", "GET /healthz"]
    )


def test_every_refusal_is_declared_with_the_body_the_server_sends(api_schema):
    spec = api_schema.raw_schema
    assert "HTTPValidationError" not in json.dumps(spec)
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            codes = set(operation["responses"])
            assert {"200", "400", "500", "503"} <= codes, (method, path)
            for code, response in operation["responses"].items():
                if code != "200":
                    assert response["content"]["application/json"]["schema"] == ERROR
    upload = spec["paths"]["/api/colorize"]["post"]["responses"]
    assert {"408", "413", "415", "422", "429"} <= set(upload)
    assert "404" in spec["paths"]["/api/colorize/{upload_id}"]["get"]["responses"]


def test_the_description_states_the_bounds_the_server_keeps(api_schema):
    spec = api_schema.raw_schema
    form = spec["paths"]["/api/colorize"]["post"]["requestBody"]["content"]
    fields = form["multipart/form-data"]["schema"]["properties"]
    assert (fields["temperature"]["minimum"], fields["temperature"]["maximum"]) == (
        MIN_TEMPERATURE,
        MAX_TEMPERATURE,
    )
    assert fields["max_side"]["minimum"] == MIN_PREVIEW_SIDE and fields["format"]["enum"] == [
        "png",
        "jpg",
    ]
    assert "1 MB" in fields["image"]["description"]
    assert "1,000,000 pixels" in fields["image"]["description"]
    assert fields["hints"]["properties"]["points"]["maxItems"] == MAX_POINTS
    query = {
        p["name"]: p["schema"]
        for p in spec["paths"]["/api/colorize/{upload_id}"]["get"]["parameters"]
        if p["in"] == "query"
    }
    temperature = next(s for s in query["temperature"]["anyOf"] if s.get("type") == "number")
    assert (temperature["minimum"], temperature["maximum"]) == (MIN_TEMPERATURE, MAX_TEMPERATURE)
    side = next(s for s in query["max_side"]["anyOf"] if s.get("type") == "integer")
    assert side["minimum"] == MIN_PREVIEW_SIDE and query["format"]["enum"] == ["png", "jpg"]
