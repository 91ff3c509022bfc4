import os

# Nothing in the test suite may touch the network (a stray Hub call retries for ~47 s offline).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# A model cached by `emoportraits download` must not become the tests' default model: point the cache
# at a folder that does not exist (tests of the download set their own).
os.environ["EMOPORTRAITS_HOME"] = os.path.join(os.path.dirname(__file__), ".no-emoportraits-home")

import pytest  # noqa: E402
import torch  # noqa: E402

from emoportraits import EmoPortraits, EmoPortraitsConfig  # noqa: E402


def make_model(preset: str = "tiny", seed: int = 0) -> EmoPortraits:
    torch.manual_seed(seed)
    return EmoPortraits(EmoPortraitsConfig.preset(preset)).eval()


def random_images(model: EmoPortraits, batch: int = 1, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    s = model.config.image_size
    return torch.rand(batch, 3, s, s, generator=gen)


@pytest.fixture
def tiny_model() -> EmoPortraits:
    return make_model("tiny")
