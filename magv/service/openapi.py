"""The service's OpenAPI 3.1 document, written out by hand: three routes do not need a generator."""

from __future__ import annotations

from typing import Any

from magv import __version__
from magv.messages import STATUSES
from magv.service.payload import MAX_SIBLINGS

_MESSAGES = {
    "type": "array", "minItems": 1,
    "description": "OpenAI chat-completions messages (or LangChain message dicts): the user's question, "
                   "assistant tool calls, tool results, the final assistant reply.",
    "items": {"type": "object", "additionalProperties": True,
              "properties": {"role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
                             "content": {}, "tool_calls": {"type": "array"}, "tool_call_id": {"type": "string"}}},
}  # fmt: skip

_TRAJECTORY = {
    "type": "object", "required": ["messages"], "additionalProperties": False,
    "properties": {
        "messages": {"$ref": "#/components/schemas/Messages"},
        "id": {"type": "string", "description": "Echoed in the answer."},
        "group": {"type": "string", "description": "Trajectories of one request with the same group are "
                  "runs of one question (siblings) and are featurized together."},
        "siblings": {"type": "array", "maxItems": MAX_SIBLINGS, "items": {"$ref": "#/components/schemas/Messages"},
                     "description": "Other runs of the same question: context for the sibling features, not scored."},
        "status": {"enum": sorted(STATUSES), "default": "ok", "description": "How the run ended."},
    },
}  # fmt: skip

_REASON = {
    "type": "object", "required": ["feature", "value", "contribution"],
    "properties": {"feature": {"type": "string"}, "value": {"type": "number"},
                   "contribution": {"type": "number", "description": "Effect on the log-odds of correct."}},
}  # fmt: skip

_RESULT = {
    "type": "object", "required": ["verdict", "probability", "threshold", "reasons"],
    "properties": {
        "id": {"type": ["string", "null"]},
        "verdict": {"enum": ["correct", "incorrect"]},
        "probability": {"type": "number", "minimum": 0, "maximum": 1, "description": "P(correct)."},
        "threshold": {"type": "number"},
        "reasons": {"type": "array", "items": {"$ref": "#/components/schemas/Reason"},
                    "description": "The largest feature contributions, largest first."},
        "ged": {"enum": ["exact", "bounded"],
                "description": "Whether every graph edit distance of the row is exact, or some is an upper "
                               "bound (large graphs, or the request's GED time spent)."},
    },
}  # fmt: skip

_ERROR = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["field", "message"],
                             "properties": {"field": {"type": ["string", "null"]}, "message": {"type": "string"}}}},
}  # fmt: skip


def _json(ref: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def openapi_schema(max_body: int, max_trajectories: int, max_pairs: int) -> dict[str, Any]:
    errors = {
        "400": {"description": "The body is not JSON (or not UTF-8).", **_json("Error")},
        "401": {
            "description": "The service has a token and the request's `Authorization: Bearer` differs.",
            **_json("Error"),
        },
        "413": {
            "description": f"More than {max_body} bytes, {max_trajectories} trajectories or {max_pairs} "
            "sibling comparisons (each scored run against every other run of its group).",
            **_json("Error"),
        },
        "422": {"description": "A field is missing or wrong; `field` names it.", **_json("Error")},
    }
    one = {
        "allOf": [
            {"$ref": "#/components/schemas/Result"},
            {
                "type": "object",
                "properties": {
                    "model": {"type": "string"},
                    "logged": {"type": "integer"},
                    "log_error": {"type": "string"},
                },
            },
        ]
    }
    batch = {
        "type": "object",
        "required": ["model", "results"],
        "properties": {
            "model": {"type": "string"},
            "logged": {"type": "integer"},
            "log_error": {"type": "string"},
            "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "magv verifier",
            "version": __version__,
            "description": "Verdicts on tool-using agents' trajectories from a trained magv verifier.",
        },
        "paths": {
            "/v1/verify": {
                "post": {
                    "summary": "Score one trajectory or a batch",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Trajectory"},
                                        {
                                            "type": "object",
                                            "required": ["trajectories"],
                                            "additionalProperties": False,
                                            "properties": {
                                                "trajectories": {
                                                    "type": "array",
                                                    "minItems": 1,
                                                    "maxItems": max_trajectories,
                                                    "items": {"$ref": "#/components/schemas/Trajectory"},
                                                }
                                            },
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "The verdict (one trajectory) or `results` in request order (a batch).",
                            "content": {"application/json": {"schema": {"oneOf": [one, batch]}}},
                        },
                        **errors,
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "Liveness and the loaded model",
                    "responses": {"200": {"description": "The service is up."}},
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}
            },
        },
        "components": {
            "schemas": {
                "Messages": _MESSAGES,
                "Trajectory": _TRAJECTORY,
                "Reason": _REASON,
                "Result": _RESULT,
                "Error": _ERROR,
            }
        },
    }
