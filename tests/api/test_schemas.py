"""app/api/schemas.py model_of: an API model with an engine dataclass's fields, up to a named one."""
from __future__ import annotations

import dataclasses

import pytest


@dataclasses.dataclass(frozen=True)
class Record:
    name: str
    width: int = 16
    note: str | None = None


def test_model_of_copies_fields_in_order_up_to_through():
    from app.api.schemas import model_of

    every = model_of(Record)
    assert list(every.model_fields) == ["name", "width", "note"]
    assert every(name="a").width == 16 and every.model_fields["name"].is_required()
    assert list(model_of(Record, through="width").model_fields) == ["name", "width"]


def test_model_of_refuses_a_field_the_record_does_not_have():
    from app.api.schemas import model_of

    with pytest.raises(ValueError, match="Record has no field 'widht'; it has name, width, note"):
        model_of(Record, through="widht")
