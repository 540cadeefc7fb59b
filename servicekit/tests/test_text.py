from typing import Annotated

import pytest
from pydantic import StringConstraints, TypeAdapter, ValidationError

from servicekit.text import trimmed

Name = TypeAdapter(Annotated[str, StringConstraints(min_length=1, max_length=5), trimmed()])
Phone = TypeAdapter(Annotated[str, StringConstraints(min_length=3, max_length=8), trimmed(3)])
Outcome = TypeAdapter(Annotated[str, StringConstraints(max_length=5), trimmed(0)])


def test_text_within_the_limit_is_trimmed() -> None:
    assert Name.validate_python(" abc ") == "abc"
    assert Outcome.validate_python("   ") == ""


def test_padding_does_not_carry_text_over_the_stated_limit() -> None:
    # pydantic's strip_whitespace would strip first and accept these 7 characters under a limit of 5.
    with pytest.raises(ValidationError, match="at most 5"):
        Name.validate_python(" abcde ")


@pytest.mark.parametrize("blank", [" ", "\t\n", "\u3000"])
def test_blank_text_is_refused_where_text_is_required(blank: str) -> None:
    with pytest.raises(ValidationError, match="more than white space"):
        Name.validate_python(blank)


def test_the_minimum_holds_after_trimming() -> None:
    assert Phone.validate_python(" 123 ") == "123"
    with pytest.raises(ValidationError, match="at least 3 characters"):
        Phone.validate_python("  12  ")


def test_the_document_states_the_limits_of_the_sent_text() -> None:
    assert Name.json_schema() == {"type": "string", "minLength": 1, "maxLength": 5}
