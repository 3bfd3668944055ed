"""Hypothesis fuzzing of the COCO validator: randomly mutated annotation files (values
replaced by any JSON value, keys dropped, records duplicated, bytes cut or garbled) never
crash ``validate_coco``, ``retina-check-data`` or ``CocoDetection``: they report."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from relhelp import FUZZ_EXAMPLES

from retina.cli.check_data import main
from retina.data import CocoDetection, DataError
from retina.data.validate import Problem, validate_coco

FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BASE = {
    "images": [
        {"id": 1, "file_name": "a.png", "width": 32, "height": 24},
        {"id": 2, "file_name": "b.png", "width": 16, "height": 16},
    ],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 7, "bbox": [1, 2, 10, 8], "iscrowd": 0,
         "area": 80.0},
        {"id": 11, "image_id": 2, "category_id": 7, "bbox": [0, 0, 16, 16], "iscrowd": 1},
        {"id": 12, "image_id": 2, "category_id": 8, "bbox": [3.5, 1.25, 4, 4]},
    ],
    "categories": [{"id": 7, "name": "thing"}, {"id": 8, "name": "other"}],
}  # fmt: skip

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "a.png", "../a.png", "a.png\x00", "/", "\udcff"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys/indices) into a JSON tree, the root excluded."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(
        node, list) else ()  # fmt: skip
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


@st.composite
def mutated(draw) -> bytes:
    """Bytes of a mutated annotation file."""
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "duplicate"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
    text = json.dumps(data).encode("utf-8", errors="surrogatepass")
    damage = draw(st.sampled_from(["none", "none", "cut", "garble"]))
    if damage == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == "garble" and text:
        pos = draw(st.integers(0, len(text) - 1))
        text = text[:pos] + draw(st.binary(min_size=1, max_size=4)) + text[pos + 1 :]
    return text


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    Image.new("RGB", (32, 24)).save(tmp_path / "a.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "b.png")
    return tmp_path


@FUZZ
@given(mutated())
def test_mutated_annotation_files_are_reported_not_crashed_on(
    image_root: Path, content: bytes
) -> None:
    ann = image_root / "ann.json"
    ann.write_bytes(content)
    problems = validate_coco(ann, image_root, check_images=True)
    assert isinstance(problems, list)
    for problem in problems:
        assert isinstance(problem, Problem) and isinstance(problem.message, str)
        assert "\n" not in problem.message and problem.message
    with contextlib.redirect_stdout(io.StringIO()) as out:
        status = main([str(ann), str(image_root)])
    assert status == (1 if any(p.is_error for p in problems) else 0), out.getvalue()
    json_problems = [p for p in validate_coco(ann, check_images=False) if p.is_error]
    try:
        dataset = CocoDetection(ann, image_root)
    except DataError as err:
        assert "\n" not in str(err)
        assert json_problems, f"CocoDetection refused a file the validator passed: {err}"
        return
    assert not json_problems, f"CocoDetection accepted {json_problems[0]}"
    for index in range(len(dataset)):
        try:
            dataset[index]
        except DataError as err:  # a broken image file, reported by the validator too
            assert "\n" not in str(err) and problems, err
