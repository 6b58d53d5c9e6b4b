from tests.features.conftest import encoder_file, extracted, store  # noqa: F401  (shared session fixtures)
