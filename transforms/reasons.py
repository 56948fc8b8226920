"""Why an input failed: the one vocabulary of dead-letter reasons, stable strings that every
stage's dead letters, manifests and summaries (``failed_by_reason``) count by."""

# reading and decoding (transforms.decode, transforms.read_images)
EMPTY = "empty_file"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED = "truncated_or_corrupt"
TOO_LARGE = "too_many_pixels"
TOO_SMALL = "smaller_than_patch"
UNREADABLE = "unreadable_path"
UNSAFE_PATH = "unsafe_relative_path"
MULTI_FRAME = "multi_frame"  # --frames refuse
DEEP_SAMPLES = "more_than_8_bits"  # --strict-depth
# matching: a pattern that matched no file
NO_MATCH = "no_match"
# the models (apply, archive) and code files (decompress)
INFERENCE_FAILED = "inference_failed"
BAD_CODE_FILE = "bad_code_file"
