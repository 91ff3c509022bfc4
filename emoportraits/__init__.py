"""emoportraits: one-shot head avatars driven by video, by speech, and with generated head poses."""
from . import bundle  # noqa: F401  (registers the model name "official" for from_pretrained)
from .config import EmoPortraitsConfig
from .errors import EmoPortraitsError, WeightsMismatchError
from .models import Avatar, EmoPortraits, SpeechEncoder, SpeechEncoderConfig
from .version import __version__
__all__ = ["__version__", "Avatar", "EmoPortraits", "EmoPortraitsConfig", "EmoPortraitsError", "SpeechEncoder", "SpeechEncoderConfig",
           "WeightsMismatchError"]
