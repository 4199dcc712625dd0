"""PLUM as a `trust_remote_code` model: `AutoModel.from_pretrained(path, trust_remote_code=True)`."""

from .configuration_plum import PlumConfig
from .modeling_plum import PlumForConditionalGeneration, PlumOutput, PlumSegmentationOutput
from .pipeline_plum import PlumPartSegmentationPipeline
from .processing_plum import PlumProcessor, bio_to_spans

__all__ = [
    "PlumConfig",
    "PlumForConditionalGeneration",
    "PlumOutput",
    "PlumPartSegmentationPipeline",
    "PlumProcessor",
    "PlumSegmentationOutput",
    "bio_to_spans",
]
