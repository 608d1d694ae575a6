import os

# Triton kernels run on the CPU under Triton's interpreter; it must be chosen before triton is imported.
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Two cores: keep torch from oversubscribing them when tests run beside other work.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def one_torch_thread():
    """Microscopic models: one intra-op thread is as fast, and far faster when the two cores are busy.

    Modules of tiny-model tests use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_preset():
    """The tiny preset shrunk further so a test trains in seconds."""
    from falcon_h1r.config import load_preset

    return load_preset("tiny", {"tasks.train_per_domain": 60, "tasks.test_per_domain": 10, "train.steps": 6, "train.cpu_ranks": 1,
                                "train.batch_size": 8, "eval.problems_per_domain": 4,
                                "generation.max_new_tokens": 12, "tokenizer.vocab_size": 300})


@pytest.fixture(autouse=True)
def _transformers_unpatched():
    """The trainers install the packed-Mamba dispatchers into transformers explicitly
    (``falcon_h1r.packed_mamba.enable_packed_mamba``); each test leaves transformers as it found it."""
    yield
    from falcon_h1r.packed_mamba import disable_packed_mamba

    disable_packed_mamba()
