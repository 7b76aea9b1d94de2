"""The API_TOKEN check of streams/ops/web.py: the scheme in any case, the token exactly."""

from __future__ import annotations

import pytest

from streams.ops.web import authorized

TOKEN = "s3cret-Token"


@pytest.mark.parametrize(
    "header", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer  {TOKEN}"]
)
def test_the_scheme_is_case_insensitive(header: str) -> None:
    assert authorized({"Authorization": header}, TOKEN)


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {TOKEN.lower()}",  # the token itself is exact
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        TOKEN,
        f"Bearer{TOKEN}",
        "Bearer ",
        "",
    ],
)
def test_the_token_is_compared_exactly(header: str) -> None:
    assert not authorized({"Authorization": header}, TOKEN)
    assert not authorized({}, TOKEN)


def test_no_token_set_lets_every_request_through() -> None:
    assert authorized({}, "")
