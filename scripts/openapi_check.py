"""Checks Orderly's OpenAPI document (used by tests/api/openapi.rs).

usage: openapi_check.py SPEC.json [SAMPLES.json]

1. SPEC.json must be a valid OpenAPI 3.1 document (openapi-spec-validator).
2. Each sample {"method", "path", "status", "body"} -- a real response the
   test recorded, `path` being the route pattern -- must be documented for
   that status, and its body must match the documented JSON schema.

Exits non-zero, listing every problem, if anything fails.
"""

import json
import sys

from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate


def response_schema(spec, method, path, status):
    operation = spec["paths"].get(path, {}).get(method)
    if operation is None:
        return None, f"{method.upper()} {path} is not in the document"
    response = operation["responses"].get(str(status))
    if response is None:
        return None, f"{method.upper()} {path} does not document status {status}"
    content = response.get("content", {}).get("application/json")
    if content is None:
        return None, f"{method.upper()} {path} {status} documents no JSON body"
    # Resolve "#/components/..." against a root that carries the components.
    return {**content["schema"], "components": spec.get("components", {})}, None


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    validate(spec)
    if not spec["openapi"].startswith("3.1."):
        sys.exit(f"openapi is {spec['openapi']}, expected 3.1.x")
    problems = []
    samples = []
    if len(sys.argv) > 2:
        with open(sys.argv[2]) as f:
            samples = json.load(f)
    for sample in samples:
        method, path, status = sample["method"].lower(), sample["path"], sample["status"]
        schema, problem = response_schema(spec, method, path, status)
        if problem:
            problems.append(problem)
            continue
        for error in OAS31Validator(schema).iter_errors(sample["body"]):
            where = "/".join(str(p) for p in error.absolute_path) or "(body)"
            problems.append(f"{method.upper()} {path} {status}: {where}: {error.message}")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"valid OpenAPI {spec['openapi']}; {len(samples)} responses match their schemas")


if __name__ == "__main__":
    main()
