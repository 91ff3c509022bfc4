"""emoportraits: one-shot head avatars driven by video, by speech, and with generated head poses."""
from .config import EmoPortraitsConfig
from .errors import EmoPortraitsError, WeightsMismatchError
from .models import Avatar, EmoPortraits, SpeechEncoder, SpeechEncoderConfig

__version__ = "0.1.0"
__all__ = ["Avatar", "EmoPortraits", "EmoPortraitsConfig", "EmoPortraitsError", "SpeechEncoder", "SpeechEncoderConfig",
           "WeightsMismatchError"]
