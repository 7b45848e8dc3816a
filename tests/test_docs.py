"""The reference stays complete: every result code is documented."""

import re
from pathlib import Path

from ledger.api.errors import status_of
from ledger.domain.codes import Code

API = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_every_result_code_has_a_heading_with_its_status_in_the_api_reference():
    text = API.read_text()
    for code in Code:
        found = re.search(rf"^### `{code.value}`\n\nHTTP (\d+)\.", text, re.MULTILINE)
        assert found, f"docs/api.md has no heading for {code.value}"
        assert int(found.group(1)) == status_of(code), code.value
