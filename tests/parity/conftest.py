import pytest

pytest.importorskip("transformers", reason="parity tests need the test extra: pip install -e '.[test]'")
