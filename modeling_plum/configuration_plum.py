# Copyright 2026 The PLUM / PARTONOMY release team. Licensed under the Apache License, Version 2.0.
"""PLUM configuration."""

from __future__ import annotations

import transformers
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

# The transformers releases this code works with. 5.24.0 is the oldest: 5.20–5.23 load a checkpoint but fail its
# forward (LLaVA's output has no `image_outputs` before 5.24), 5.19 and older lack `SubConfigSpec`. Checked when this
# file is imported, before anything below can fail in a less helpful way.
SUPPORTED_TRANSFORMERS = ">=5.24,<6"


class UnsupportedTransformersError(ImportError):
    """The installed transformers is outside `SUPPORTED_TRANSFORMERS`."""


def check_transformers_version(version: str | None = None) -> None:
    """Raises `UnsupportedTransformersError`, one line naming both versions and the fix, when `version` (default:
    the installed transformers') is outside `SUPPORTED_TRANSFORMERS`. Pre-releases inside the range pass."""
    version = transformers.__version__ if version is None else version
    bounds = {spec.operator: spec.version for spec in SpecifierSet(SUPPORTED_TRANSFORMERS)}
    try:
        supported = SpecifierSet(SUPPORTED_TRANSFORMERS).contains(Version(version), prereleases=True)
    except InvalidVersion:
        supported = False
    if not supported:
        last = f"{int(bounds['<'].split('.')[0]) - 1}.x"
        raise UnsupportedTransformersError(
            f"PLUM's remote code supports transformers {bounds['>=']}–{last}; this environment has {version}: "
            f"pip install 'transformers{SUPPORTED_TRANSFORMERS}'"
        )


check_transformers_version()

from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, PreTrainedConfig  # noqa: E402
from transformers.configuration_utils import SubConfigSpec  # noqa: E402

# Official SAM image encoders (segment_anything.build_sam): width, depth, heads, global-attention blocks.
SAM_SIZES = {
    "vit_b": {
        "sam_encoder_dim": 768,
        "sam_encoder_depth": 12,
        "sam_encoder_heads": 12,
        "sam_global_attn_indexes": [2, 5, 8, 11],
    },
    "vit_l": {
        "sam_encoder_dim": 1024,
        "sam_encoder_depth": 24,
        "sam_encoder_heads": 16,
        "sam_global_attn_indexes": [5, 11, 17, 23],
    },
    "vit_h": {
        "sam_encoder_dim": 1280,
        "sam_encoder_depth": 32,
        "sam_encoder_heads": 16,
        "sam_global_attn_indexes": [7, 15, 23, 31],
    },
}


PROJECTOR_TYPES = ("mlp", "linear")
SEGMENTATION_QUERIES = ("span", "seg_token")


class PlumConfig(PreTrainedConfig):
    r"""
    Configuration of [`PlumForConditionalGeneration`]: a LLaVA backbone (CLIP vision tower, projector, LLaMA) plus
    the Segment Anything image encoder, prompt encoder and mask decoder, PLUM's BIO span tagger, query projector
    and mask-feedback pooler, and the loss weights of the paper (appendix A, Table 6).

    Args:
        llava_config (`LlavaConfig` or `dict`, *optional*):
            The LLaVA backbone (`vision_config` + `text_config`). Its `image_token_index` is the `<image>` token id.
        sam_size (`str`, *optional*):
            `vit_b`, `vit_l` or `vit_h`: fills the four `sam_encoder_*` / `sam_global_attn_indexes` fields with
            the official sizes. Leave `None` to set them one by one (e.g. for the tiny preset).
        sam_image_size (`int`, *optional*, defaults to 1024):
            SAM input resolution: the longest image side is resized to it, the rest zero-padded.
        sam_patch_size (`int`, *optional*, defaults to 16): SAM ViT patch size (the embedding grid is
            `sam_image_size / sam_patch_size` square).
        sam_encoder_dim, sam_encoder_depth, sam_encoder_heads (`int`): SAM ViT width, depth and heads.
        sam_global_attn_indexes (`list[int]`): the SAM ViT blocks with global attention (the rest are windowed).
        sam_window_size (`int`, *optional*, defaults to 14): window of the windowed-attention blocks.
        sam_prompt_dim (`int`, *optional*, defaults to 256): SAM prompt / mask-decoder width; span queries have it.
        sam_mask_in_chans (`int`, *optional*, defaults to 16): channels of SAM's mask-downscaling path.
        sam_decoder_depth, sam_decoder_mlp_dim, sam_decoder_heads (`int`): the two-way transformer of the mask decoder.
        span_num_heads (`int`, *optional*, defaults to 8), span_ffn_dim (`int`, *optional*, defaults to 2048),
        span_dropout (`float`, *optional*, defaults to 0.1): the span tagger's bidirectional encoder layer, which
            runs at the language model's width and is followed by a token-wise 2-layer MLP to O / B / I (the
            reference implementation's order, whose checkpoints `convert --from-reference` imports).
        span_class_weights (`list[float]`, *optional*, defaults to `[0.1, 1.0, 1.0]`): cross-entropy weights of O, B, I.
        use_feedback (`bool`, *optional*, defaults to `True`): condition span k's mask on the masks of spans < k.
        feedback_num_heads (`int`, *optional*, defaults to 8): heads of the per-patch attention pooling.
        feedback_add_no_mask (`bool`, *optional*, defaults to `True`): the dense prompt of spans k >= 1 is SAM's
            no-mask embedding plus the pooled feedback (whose output projection starts at zero), so a pretrained SAM
            decoder first sees exactly the prompt it was trained with. The reference implementation uses the pooled
            term alone; `convert --from-reference` sets `False` so that its checkpoints compute what they computed.
        segmentation_query (`str`, *optional*, defaults to `"span"`): where mask queries come from. `"span"`: PLUM's
            BIO span tagger over the answer, each span's mean projected hidden state. `"seg_token"`: LISA's way, a
            `[SEG]` token written after each part name (`seg_token_index`), its projected hidden state; the tagger
            is not used. Kept as a real alternative for the ablation (`make ablate`).
        seg_token_index (`int`, *optional*): the `[SEG]` token's id, with `segmentation_query="seg_token"`.
        projector_type (`str`, *optional*, defaults to `"mlp"`): LLaVA-1.5's two-layer GELU projector (`"mlp"`) or
            the single linear layer of LLaVA-LLaMA-2-lightning, the reference PLUM's base (`"linear"`).
        lm_loss_weight, span_loss_weight, kl_loss_weight, focal_tversky_weight, bce_weight, dice_weight (`float`):
            the loss weights (1.0, 2.0, 0.1, 8.0, 2.0, 0.5).
        use_focal_tversky (`bool`, *optional*, defaults to `True`): Focal-Tversky mask loss; Dice when `False`.
        focal_tversky_alpha, focal_tversky_beta, focal_tversky_gamma (`float`): 0.7, 0.3, 0.75.
        dice_scale (`float`, *optional*, defaults to 1000.0): LISA's Dice scale factor.
        kl_sigma (`float`, *optional*, defaults to 1.0): the KL term is `0.5 / sigma**2 * MSE(student, teacher)`.
        kl_frozen_snapshot (`bool`, *optional*, defaults to `False`): keep a frozen copy of the language model as
            the KL teacher. Without LoRA adapters this is the only teacher, at the cost of a second copy of the
            language model in memory (13B parameters for plum-13b); with adapters the teacher is the same model
            with adapters disabled and this stays `False`.
        train_sam_image_encoder (`bool`, *optional*, defaults to `False`): whether SAM's image encoder trains
            (frozen for real checkpoints; the tiny preset trains it from scratch).
        train_sam_prompt_encoder (`bool`, *optional*, defaults to `True`): whether SAM's prompt encoder trains
            (the paper's Table 6 trains "decoder + prompt-enc."; its point and box embeddings stay frozen, PLUM
            never prompts with them).
        mask_threshold (`float`, *optional*, defaults to 0.0): foreground is logit > threshold.
    """

    model_type = "plum"
    sub_configs_defaults = {"llava_config": SubConfigSpec(config_class=LlavaConfig)}

    llava_config: dict | PreTrainedConfig | None = None
    sam_size: str | None = None
    sam_image_size: int = 1024
    sam_patch_size: int = 16
    sam_encoder_dim: int = 1280
    sam_encoder_depth: int = 32
    sam_encoder_heads: int = 16
    sam_global_attn_indexes: list | tuple = (7, 15, 23, 31)
    sam_window_size: int = 14
    sam_prompt_dim: int = 256
    sam_mask_in_chans: int = 16
    sam_decoder_depth: int = 2
    sam_decoder_mlp_dim: int = 2048
    sam_decoder_heads: int = 8
    span_num_heads: int = 8
    span_ffn_dim: int = 2048
    span_dropout: float = 0.1
    span_class_weights: list | tuple = (0.1, 1.0, 1.0)
    use_feedback: bool = True
    feedback_num_heads: int = 8
    feedback_add_no_mask: bool = True
    segmentation_query: str = "span"
    seg_token_index: int | None = None
    projector_type: str = "mlp"
    lm_loss_weight: float = 1.0
    span_loss_weight: float = 2.0
    kl_loss_weight: float = 0.1
    focal_tversky_weight: float = 8.0
    bce_weight: float = 2.0
    dice_weight: float = 0.5
    use_focal_tversky: bool = True
    focal_tversky_alpha: float = 0.7
    focal_tversky_beta: float = 0.3
    focal_tversky_gamma: float = 0.75
    dice_scale: float = 1000.0
    kl_sigma: float = 1.0
    kl_frozen_snapshot: bool = False
    train_sam_image_encoder: bool = False
    train_sam_prompt_encoder: bool = True
    mask_threshold: float = 0.0

    def __post_init__(self, **kwargs):
        if self.sam_size is not None:
            if self.sam_size not in SAM_SIZES:
                raise ValueError(f"sam_size must be one of {sorted(SAM_SIZES)}, got {self.sam_size!r}")
            for key, value in SAM_SIZES[self.sam_size].items():
                setattr(self, key, value)
        if self.segmentation_query not in SEGMENTATION_QUERIES:
            raise ValueError(
                f"segmentation_query must be one of {SEGMENTATION_QUERIES}, got {self.segmentation_query!r}"
            )
        if self.segmentation_query == "seg_token" and self.seg_token_index is None:
            raise ValueError('segmentation_query="seg_token" needs seg_token_index, the [SEG] token\'s id')
        if self.projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"projector_type must be one of {PROJECTOR_TYPES}, got {self.projector_type!r}")
        self.sam_global_attn_indexes = list(self.sam_global_attn_indexes)
        self.span_class_weights = list(self.span_class_weights)
        if self.sam_image_size % self.sam_patch_size:
            raise ValueError(
                f"sam_image_size {self.sam_image_size} is not a multiple of sam_patch_size {self.sam_patch_size}"
            )
        super().__post_init__(**kwargs)

    def sync_sub_config_dtypes(self):
        """Gives the LLaVA sub-configs (and theirs) this config's `dtype`.

        A LLaVA folder saved in fp16 carries `dtype` in each sub-config; left alone, `from_pretrained(dtype=...)`
        would build CLIP and LLaMA in the old dtype and everything else in the new one.
        """
        if self.dtype is None or self.llava_config is None:
            return
        for sub in (self.llava_config, self.llava_config.text_config, self.llava_config.vision_config):
            sub.dtype = self.dtype

    @property
    def sam_embedding_size(self) -> int:
        """Side of SAM's image-embedding grid."""
        return self.sam_image_size // self.sam_patch_size

    @property
    def text_config(self):
        return self.llava_config.text_config

    @property
    def image_token_index(self) -> int:
        return self.llava_config.image_token_index

    @classmethod
    def from_preset(cls, name: str, **overrides) -> PlumConfig:
        """`tiny` (tests, CPU demo); `plum-7b` / `plum-13b`: LLaVA-1.5 geometry (LLaMA-2 7B / 13B, CLIP ViT-L/14-336
        with 576 image tokens, two-layer projector) + SAM ViT-H; `plum-13b-reference`: the reference PLUM's geometry
        (LLaVA-LLaMA-2-13B lightning: CLIP ViT-L/14-224 with 256 image tokens, one linear projector) + SAM ViT-H."""
        if name not in PRESETS:
            raise ValueError(f"unknown PLUM preset {name!r}; choose one of {sorted(PRESETS)}")
        kwargs = PRESETS[name]()
        kwargs.update(overrides)
        return cls(**kwargs)


def _clip_vit_l(image_size: int) -> CLIPVisionConfig:
    """CLIP ViT-L/14: at 336 px (LLaVA-1.5, 576 image tokens) or 224 px (`openai/clip-vit-large-patch14`, the
    reference PLUM's tower, 256 image tokens)."""
    return CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        patch_size=14,
        image_size=image_size,
        projection_dim=768,
    )


def _llava(
    text: LlamaConfig, vision: CLIPVisionConfig, image_token_index: int, vision_feature_layer: int = -2
) -> LlavaConfig:
    """LLaVA-1.5's wiring: the patch tokens (CLS dropped) of CLIP's penultimate layer unless told otherwise."""
    num_patches = (vision.image_size // vision.patch_size) ** 2
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_index,
        image_seq_length=num_patches,
        vision_feature_select_strategy="default",
        vision_feature_layer=vision_feature_layer,
    )


def _llama2_text(hidden_size: int, intermediate_size: int, num_layers: int, num_heads: int, vocab_size: int):
    """A LLaMA-2 language model (multi-head attention, 4,096 positions) of the given size and vocabulary."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        pad_token_id=0,
    )


def _llava_llama2(hidden_size: int, intermediate_size: int, num_layers: int, num_heads: int):
    """LLaVA with a LLaMA-2 language model (vocabulary 32,000 + the `<image>` token 32000) and CLIP ViT-L/14-336."""
    text = _llama2_text(hidden_size, intermediate_size, num_layers, num_heads, vocab_size=32001)
    return {"llava_config": _llava(text, _clip_vit_l(336), image_token_index=32000), "sam_size": "vit_h"}


def _plum_13b():
    return _llava_llama2(hidden_size=5120, intermediate_size=13824, num_layers=40, num_heads=40)


# The reference PLUM's tokenizer: LLaMA-2's 32,000 tokens + `<im_start>` + `<im_end>`; `<image>` is added after them
# (the reference expands the image inside its model, transformers' LLaVA needs it in the vocabulary).
REFERENCE_VOCAB_SIZE = 32003
REFERENCE_IMAGE_TOKEN_INDEX = 32002


def _plum_13b_reference():
    """The geometry of the reference PLUM checkpoints: `liuhaotian/llava-llama-2-13b-chat-lightning-preview`
    (LLaMA-2-13B, CLIP ViT-L/14 at 224 px, one linear projector) plus SAM ViT-H."""
    text = _llama2_text(5120, 13824, num_layers=40, num_heads=40, vocab_size=REFERENCE_VOCAB_SIZE)
    return {
        "llava_config": _llava(text, _clip_vit_l(224), image_token_index=REFERENCE_IMAGE_TOKEN_INDEX),
        "sam_size": "vit_h",
        "projector_type": "linear",
        "feedback_add_no_mask": False,
    }


def _plum_7b():
    return _llava_llama2(hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32)


TINY_VOCAB_SIZE = 512  # the tiny tokenizer trained by `modeling_plum.convert --preset tiny`


def _tiny():
    text = LlamaConfig(
        vocab_size=TINY_VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    # 64 image tokens, each a 4 x 4 patch of the image at 32 px (a quarter of the toy's side, as CLIP-336 sees a
    # photo). The grid is what the LM reads; smaller patches of a smaller image taught the tiny tower faster: a
    # 17-way linear probe after stage 0's 700 CLIP steps named held-out toy objects 71 % right, against 46 % for
    # 8 x 8 patches at 64 px (exploratory runs, same steps and seconds).
    vision = CLIPVisionConfig(
        hidden_size=96,
        intermediate_size=192,
        num_hidden_layers=3,
        num_attention_heads=4,
        patch_size=4,
        image_size=32,
        projection_dim=64,
    )
    return {
        # The image token is the last id of the tiny vocabulary (the tokenizer reserves it). The LM reads the tower's
        # last layer: LLaVA-1.5's penultimate layer skips 1 of CLIP-L's 24 layers, here it would skip 1 of 3 (a
        # linear probe on the patch tokens named held-out toy objects 58 % right from the last layer, 43 % from the
        # penultimate; stage 0's LLaVA then named 49 % against 38 %, exploratory runs).
        "llava_config": _llava(text, vision, TINY_VOCAB_SIZE - 1, vision_feature_layer=-1),
        "sam_image_size": 128,
        "sam_patch_size": 8,
        "sam_encoder_dim": 64,
        "sam_encoder_depth": 4,
        "sam_encoder_heads": 4,
        "sam_global_attn_indexes": [1, 3],
        "sam_window_size": 8,
        "sam_prompt_dim": 64,
        "sam_mask_in_chans": 8,
        "sam_decoder_mlp_dim": 256,
        "span_num_heads": 4,
        "span_ffn_dim": 128,
        "feedback_num_heads": 4,
        "train_sam_image_encoder": True,
        "train_sam_prompt_encoder": True,
        # SAM is trained from scratch here, so there is no pretrained no-mask prompt to start from; measured on one toy
        # image, 200 steps: IoU 0.97 with the pooled term alone, 0.77 with the no-mask embedding added
        "feedback_add_no_mask": False,
    }


PRESETS = {
    "tiny": _tiny,
    "plum-7b": _plum_7b,
    "plum-13b": _plum_13b,
    "plum-13b-reference": _plum_13b_reference,
}
