"""`url_to_local_path`, which the Transformers sdist's tests/test_image_processing_common.py imports from the
repository's utils/ folder (not in the sdist). In Transformers' CI it maps a Hub URL to a file fetched beforehand; the
supmae test suite is offline, so a test that needs such a file is skipped, naming it."""

import unittest


def url_to_local_path(url: str) -> str:
    raise unittest.SkipTest(f"needs {url} from the Hub, and the supmae test suite runs offline")
