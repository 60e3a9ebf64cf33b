"""HTTP in: routes, request schemas, the JSON error middleware and the OpenAPI document."""
