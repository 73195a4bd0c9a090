"""The JSON text the store writes: ``customer_session.store._documents``."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given

from customer_session import StoreError
from customer_session._cart import freeze
from customer_session.store._documents import dumps
from customer_session.testing import wire_documents

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


class TestDumps:
    @given(wire_documents(include_history=True))
    def test_text_parses_back_to_the_document(self, document):
        """Any document the wire writes is stored as JSON that reads back equal."""
        assert json.loads(dumps(document)) == document

    @given(wire_documents())
    def test_text_is_compact(self, document):
        """The stored text has no whitespace between tokens."""
        outside_strings = _STRING.sub('""', dumps(document))
        assert not any(character.isspace() for character in outside_strings)

    @given(wire_documents())
    def test_frozen_values_are_written_as_arrays_and_objects(self, document):
        """A frozen document is stored as the same text as its plain form."""
        assert dumps(freeze(document)) == dumps(document)

    def test_unicode_is_kept_unescaped(self):
        """Non-ASCII text is written as itself, not as escapes."""
        assert dumps({"city": "Zürich", "note": "\u2028"}) == '{"city":"Zürich","note":"\u2028"}'

    def test_integer_beyond_64_bits_is_written_exactly(self):
        """An attribute integer too large for orjson is still written, exactly."""
        value = {"big": 2**64, "negative": -(2**80) - 1}
        text = dumps(value)
        assert text == '{"big":18446744073709551616,"negative":-1208925819614629174706177}'
        assert json.loads(text) == value

    def test_deep_nesting_is_written(self):
        """A value nested deeper than orjson accepts is still written, and reads back equal."""
        value: object = "leaf"
        for depth in range(300):
            value = {"level": depth, "inner": [value]}
        assert json.loads(dumps(value)) == value

    def test_frozen_value_beyond_orjson_is_written(self):
        """A frozen value orjson refuses (a 65-bit integer) is written by the fallback too."""
        value = {"big": [2**64], "inner": {"n": 1}}
        assert dumps(freeze(value)) == '{"big":[18446744073709551616],"inner":{"n":1}}'

    @pytest.mark.parametrize(
        ("value", "fragment"),
        [
            ({"total": float("inf")}, "$['total'] is inf"),
            ({"a": [1, {"b": float("nan")}]}, "$['a'][1]['b'] is nan"),
            ({"sku": "\ud800"}, "lone surrogate"),
            ({"\udfff": 1}, "a key of $ holds a lone surrogate"),
        ],
        ids=["inf", "nan", "surrogate", "surrogate-key"],
    )
    def test_what_would_not_read_back_is_refused(self, value, fragment):
        """A non-finite number (orjson would write null) or invalid text is a StoreError."""
        with pytest.raises(StoreError, match=re.escape(fragment)) as error:
            dumps(value, "order-1")
        assert error.value.integration_id == "order-1"
        assert "nothing was written" in str(error.value)

    def test_a_real_null_is_written(self):
        """A JSON null (an attribute's value) is written as null, as before."""
        assert dumps({"note": None, "price": 1.5}) == '{"note":null,"price":1.5}'
