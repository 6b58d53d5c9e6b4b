"""The tiny store and VOC root of the feature and detection tests (session-shared)."""

from tests.detection.conftest import voc_root  # noqa: F401
from tests.features.conftest import store  # noqa: F401
