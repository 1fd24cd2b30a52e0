"""A saved plan whose signature checks out but whose body is not a plan (made by
hand with the right key, or by a broken writer) is one clear error, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skyform.engine.planfile import PLAN_FILE_MAGIC, load_plan
from skyform.errors import SkyformError
from skyform.signing import sign


@pytest.mark.parametrize("body", [{"plan": None, "private": {}}, {"plan": {}, "private": []}])
def test_signed_plan_without_its_plan_body_is_refused(tmp_path: Path, body: dict) -> None:
    body = {"bundles": {}, **body}
    path = tmp_path / "odd.plan"
    signed = {"format": PLAN_FILE_MAGIC, "version": 1, **body, "signature": sign(body, "k")}
    path.write_text(json.dumps(signed))
    with pytest.raises(
        SkyformError, match=r"odd\.plan: not a skyform plan file \(its plan is missing\)"
    ):
        load_plan(path, "k")
