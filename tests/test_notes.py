"""Notes the library adds to exceptions it did not create: ``customer_session._notes``."""

import threading

from customer_session._notes import add_note_once


class TestAddNoteOnce:
    def test_a_note_is_added(self):
        """An exception without the note gets it."""
        error = ValueError("down")
        add_note_once(error, "after-commit hook 'mailer'")
        assert error.__notes__ == ["after-commit hook 'mailer'"]

    def test_a_note_the_exception_carries_is_not_added_again(self):
        """The same exception noted twice with the same text carries the note once."""
        error = ValueError("down")
        for _ in range(3):
            add_note_once(error, "after-commit hook 'mailer'")
        assert error.__notes__ == ["after-commit hook 'mailer'"]

    def test_a_different_note_is_kept(self):
        """A note with other text is added after the ones the exception carries."""
        error = ValueError("down")
        error.add_note("the user's own note")
        add_note_once(error, "after-commit hook 'mailer'")
        add_note_once(error, "after-commit hook 'auditor'")
        assert error.__notes__ == [
            "the user's own note",
            "after-commit hook 'mailer'",
            "after-commit hook 'auditor'",
        ]

    def test_notes_that_are_not_a_list_are_left_alone(self):
        """An exception whose __notes__ is no list keeps it, and noting it raises nothing."""
        error = ValueError("down")
        error.__notes__ = ("frozen",)  # type: ignore[attr-defined] # what add_note refuses
        add_note_once(error, "after-commit hook 'mailer'")
        assert error.__notes__ == ("frozen",)  # type: ignore[attr-defined] # as set above

    def test_threads_noting_one_exception_add_the_note_once(self):
        """Threads noting one exception object at once leave the note on it once."""
        error = ValueError("down")
        start = threading.Barrier(8)

        def note() -> None:
            start.wait()
            for _ in range(200):
                add_note_once(error, "after-commit hook 'mailer'")

        threads = [threading.Thread(target=note) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert error.__notes__ == ["after-commit hook 'mailer'"]
