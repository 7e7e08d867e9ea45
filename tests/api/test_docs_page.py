"""/api/docs/ (DocsView): a small header above Swagger UI leads back to the dashboard and to the API tokens page,
with no inline style or script (the Content-Security-Policy allows neither)."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_docs_view_links_back_to_the_dashboard_and_the_tokens_page(viewer_client: Client) -> None:
    response = viewer_client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    header = re.search(r'<header class="docs-head".*?</header>', page, re.S)
    assert header, page[:2000]
    assert f'href="{reverse("overview")}"' in header[0] and "Dashboard" in header[0]
    assert f'href="{reverse("api-tokens")}"' in header[0] and "API tokens" in header[0]
    assert "Authorization: Bearer" in header[0]
    # CSP-clean: styles from /static/ only, no inline style or script.
    assert "<style" not in page and " style=" not in page and "<script>" not in page
    assert re.search(r'<link rel="stylesheet" href="/static/pools/api-docs[^"]*\.css">', page)
    # Swagger UI still mounts below the header.
    assert page.index('class="docs-head"') < page.index('id="swagger-ui"')
