import customer_session.store


class TestStorePublicApi:
    # Its __all__ is pinned with every public module's, in tests/test_public_api.py.

    def test_public_names_have_docstrings(self):
        """Every exported class and function, and their public methods, are documented."""
        for name in customer_session.store.__all__:
            obj = getattr(customer_session.store, name)
            if callable(obj):
                assert obj.__doc__, name
                for attribute, member in vars(obj).items():
                    if callable(member) and not attribute.startswith("_"):
                        assert member.__doc__, f"{name}.{attribute}"
