"""What tests/test_zero_gpu.py asks of the live views, in its process and in the ZeroGPU-like one."""

from testkit.live_reference import doc_lines

MODEL = "test/zero-gpu"
TEXT = "The cat sat on the mat, and then it ran away."
WITH_FEATURE = "\n".join(doc_lines(6, start=1000))
WITHOUT_FEATURE = "\n".join(doc_lines(6, start=1040))
