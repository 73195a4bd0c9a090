import customer_session.store


class TestStorePublicApi:
    def test_all_is_pinned_and_sorted(self):
        """The store package exports exactly these names, sorted isort-style."""
        assert customer_session.store.__all__ == [
            "DEFAULT_RETRIES",
            "SCHEMA_VERSION",
            "AsyncPostgresStore",
            "DurableEffect",
            "Effect",
            "EffectHandler",
            "JournalEntry",
            "JournalKind",
            "PostgresStore",
            "ProcessedKey",
            "SQLiteStore",
            "SessionStore",
            "StoreReplayer",
            "open_store",
            "rebuild",
        ]

    def test_public_names_have_docstrings(self):
        """Every exported class and function, and their public methods, are documented."""
        for name in customer_session.store.__all__:
            obj = getattr(customer_session.store, name)
            if callable(obj):
                assert obj.__doc__, name
                for attribute, member in vars(obj).items():
                    if callable(member) and not attribute.startswith("_"):
                        assert member.__doc__, f"{name}.{attribute}"
