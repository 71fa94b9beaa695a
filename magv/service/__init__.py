"""Scoring in production, no pipeline database needed: a saved verifier behind `magv verify score
--input` (files, stdin/stdout) and `magv serve verifier` (HTTP). `scoring` loads and applies the
model, `payload` reads requests, `app` is the Starlette service, `log` stores what it scored when
asked to, `openapi` documents the routes."""
