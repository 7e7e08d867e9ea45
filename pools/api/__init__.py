"""The REST API under /api/v1/ (Django REST Framework) and its OpenAPI schema (drf-spectacular).

Views stay thin like the dashboard's: they parse, call `pools.selectors` (reads) and `pools.services` (writes),
and answer JSON. Tokens are in `tokens`, authentication, roles and rate limits in `auth`.
"""
