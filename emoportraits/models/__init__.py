"""The networks of EMOPortraits, one module per component of the paper."""
from .appearance import AppearanceEncoder, IdentityEncoder
from .canonical import CanonicalUNet, SourceVolumeBlocks
from .decoder import Decoder, project
from .emoportraits import Avatar, EmoPortraits
from .motion import ExpressionEncoder, HeadPoseNet
from .pose_discriminators import PoseDiscriminatorConfig, PoseDiscriminators
from .pose_generator import PoseGenerator, PoseGeneratorConfig
from .speech import SpeechEncoder, SpeechEncoderConfig
from .warping import WarpEmbedding, WarpGenerator

__all__ = ["AppearanceEncoder", "Avatar", "CanonicalUNet", "Decoder", "EmoPortraits", "ExpressionEncoder",
           "HeadPoseNet", "IdentityEncoder", "PoseDiscriminatorConfig", "PoseDiscriminators", "PoseGenerator",
           "PoseGeneratorConfig", "SourceVolumeBlocks", "SpeechEncoder", "SpeechEncoderConfig",
           "WarpEmbedding", "WarpGenerator", "project"]
