"""The seed's networks: audio/identity encoders, noise generator, frame decoder, discriminators."""
from talkface.models.audio_encoder import AudioEncoder
from talkface.models.discriminators import FrameDiscriminator, SequenceDiscriminator
from talkface.models.frame_decoder import FrameDecoder
from talkface.models.generator import Generator, GeneratorState
from talkface.models.identity_encoder import IdentityEncoder
from talkface.models.noise import NoiseGenerator

__all__ = [
    "AudioEncoder",
    "FrameDecoder",
    "FrameDiscriminator",
    "Generator",
    "GeneratorState",
    "IdentityEncoder",
    "NoiseGenerator",
    "SequenceDiscriminator",
]
