import pytest

from customer_session._secrets import masked, redacted, secret_spans

from .conftest import require_module


class TestMasked:
    @pytest.mark.parametrize(
        ("word", "shown"),
        [
            ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
            ("--db=postgresql://u:pw@h/db", "--db=postgresql://u:***@h/db"),
            (
                "postgres://u@h/db?sslmode=require&pass%77ord=pw",
                "postgres://u@h/db?sslmode=require&pass%77ord=***",
            ),
            ("host=h password=pw dbname=db", "host=h password=*** dbname=db"),
            ("--x=password=pw", "--x=password=***"),
        ],
    )
    def test_each_secret_is_replaced(self, word, shown):
        """Each secret of a word, wherever the connection string starts in it, becomes ***."""
        assert masked(word) == shown

    @pytest.mark.parametrize("word", ["orders.db", "postgresql://u@h/db", "--limit=5", ""])
    def test_a_word_without_a_secret_is_kept(self, word):
        """A word holding no secret is returned as it is."""
        assert masked(word) == word


class TestSecretSpans:
    def test_an_empty_password_is_no_span(self):
        """An empty value hides nothing, so no span is given for it."""
        assert secret_spans("postgresql://u:@h/db") == []


class TestRedacted:
    def test_the_password_is_hidden(self):
        """The stores' form of a connection string shows *** for the password."""
        require_module("psycopg", "postgres")
        shown = redacted("postgresql://u:pw@h/db")
        assert "pw" not in shown.replace("password", "")
        assert "password=***" in shown

    def test_an_unparsable_string_is_not_shown(self):
        """A string psycopg cannot parse is named without its text, secrets and all."""
        assert redacted("password=pw host=h nosuchoption=1") == "<connection string>"
