# Copyright 2026 The PLUM / PARTONOMY release team. Licensed under the Apache License, Version 2.0.
"""Write a loadable PLUM folder (safetensors + remote code + processor).

    python -m modeling_plum.convert --preset tiny --out DIR [--corpus FILE ...]
    python -m modeling_plum.convert --llava LLAVA_HF_DIR --sam sam_vit_h_4b8939.pth --out DIR
    python -m modeling_plum.convert --from-reference CKPT --llava LLAVA_HF_DIR --out DIR

`--preset tiny` trains a small tokenizer offline with `tokenizers` and initialises the tiny architecture
randomly. `--llava/--sam` builds PLUM from an HF-format LLaVA and an official SAM checkpoint (vit_b / vit_l /
vit_h read off the tensor shapes); the new heads are initialised. `--from-reference` imports a checkpoint saved
by the reference PLUM code (LISA-style names); a missing or unexpected key is an error that names it.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import torch

from .configuration_plum import SAM_SIZES, PlumConfig
from .modeling_plum import PlumForConditionalGeneration
from .processing_plum import PlumProcessor

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]
IMAGE_TOKEN = "<image>"

# A small built-in corpus in the chat format; pass --corpus to train on your own text (e.g. a dataset's answers).
_DEFAULT_CORPUS = [
    "USER: What visible parts does the object in the image have? ASSISTANT: The object in the image has the "
    "following visible parts: body, door, wheel, and window.",
    "USER: What is the object in the image? ASSISTANT: It is a car. It is an airplane.",
    "What visible parts does the dog in the image have in common with a cat? which a bird does not have?",
    "head ear eye nose mouth neck torso arm hand leg foot tail paw muzzle horn beak wing fin hair",
    "wheel door window headlight license plate mirror handlebar saddle frame cab cargo box roof wall chimney",
    "tower lantern trunk crown stem leaf petal pistil base pole shade tabletop seat backrest cap label body",
    "car truck bus bicycle house barn lighthouse cat dog bird fish tree flower lamp table chair bottle person",
]


def train_tiny_tokenizer(corpus: list[str], vocab_size: int):
    """A LLaMA-style (Metaspace BPE) fast tokenizer trained offline; `<image>` is its last id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    alphabet = [chr(c) for c in range(32, 127)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.add_special_tokens([IMAGE_TOKEN])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        additional_special_tokens=[IMAGE_TOKEN],
        model_max_length=512,
    )


def tiny_processor(config: PlumConfig, tokenizer) -> PlumProcessor:
    from transformers import CLIPImageProcessor

    size = config.llava_config.vision_config.image_size
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    return PlumProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        sam_image_size=config.sam_image_size,
        num_image_tokens=config.llava_config.image_seq_length,
        image_token=IMAGE_TOKEN,
        max_length=config.text_config.max_position_embeddings,
    )


def build_tiny(corpus: list[str] | None = None, seed: int = 0, **overrides):
    """The tiny preset with a freshly trained tokenizer: ids come from the tokenizer, never constants."""
    config = PlumConfig.from_preset("tiny", **overrides)
    tokenizer = train_tiny_tokenizer(corpus or _DEFAULT_CORPUS, config.text_config.vocab_size)
    text = config.text_config
    text.vocab_size = len(tokenizer)
    text.pad_token_id, text.bos_token_id, text.eos_token_id = (
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
    )
    config.llava_config.image_token_index = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    torch.manual_seed(seed)
    model = PlumForConditionalGeneration(config)
    return model, tiny_processor(config, tokenizer)


# ---------------------------------------------------------------------------------------------------- SAM


def sam_size_of(state_dict: dict) -> str:
    """vit_b / vit_l / vit_h from the width of the SAM image encoder's patch embedding."""
    key = next((k for k in state_dict if k.endswith("image_encoder.patch_embed.proj.weight")), None)
    if key is None:
        raise KeyError("not a SAM checkpoint: no image_encoder.patch_embed.proj.weight")
    width = state_dict[key].shape[0]
    for name, size in SAM_SIZES.items():
        if size["sam_encoder_dim"] == width:
            return name
    raise ValueError(f"SAM image encoder of width {width} is none of vit_b / vit_l / vit_h")


def _load_exact(module: torch.nn.Module, state_dict: dict, what: str):
    """load_state_dict that names every missing or unexpected key."""
    expected = set(module.state_dict())
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise KeyError(
            f"{what}: missing keys {missing[:10]}{' …' if len(missing) > 10 else ''}; "
            f"unexpected keys {unexpected[:10]}{' …' if len(unexpected) > 10 else ''}"
        )
    for key, tensor in module.state_dict().items():
        if tensor.shape != state_dict[key].shape:
            raise ValueError(
                f"{what}: {key} has shape {tuple(state_dict[key].shape)}, expected {tuple(tensor.shape)}"
            )
    module.load_state_dict(state_dict, strict=True)


def load_sam(model: PlumForConditionalGeneration, sam_state: dict, prefix: str = ""):
    """Loads `{prefix}image_encoder.*`, `prompt_encoder.*`, `mask_decoder.*` into the model's SAM modules."""
    for part, module in (
        ("image_encoder", model.sam_image_encoder),
        ("prompt_encoder", model.sam_prompt_encoder),
        ("mask_decoder", model.sam_mask_decoder),
    ):
        head = f"{prefix}{part}."
        _load_exact(
            module, {k[len(head) :]: v for k, v in sam_state.items() if k.startswith(head)}, f"SAM {part}"
        )
    leftovers = [
        k
        for k in sam_state
        if not k.startswith(
            tuple(f"{prefix}{p}." for p in ("image_encoder", "prompt_encoder", "mask_decoder"))
        )
    ]
    if leftovers:
        raise KeyError(f"unexpected SAM keys: {leftovers[:10]}")


def from_llava_and_sam(llava_dir, sam_path):
    """PLUM from an HF-format LLaVA folder and an official SAM `.pth`; new heads are initialised."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    sam_state = torch.load(sam_path, map_location="cpu", weights_only=True)
    llava = LlavaForConditionalGeneration.from_pretrained(llava_dir)
    config = PlumConfig(llava_config=llava.config, sam_size=sam_size_of(sam_state))
    model = PlumForConditionalGeneration(config)
    _load_exact(model.llava, llava.state_dict(), "LLaVA")
    load_sam(model, sam_state)
    llava_processor = AutoProcessor.from_pretrained(llava_dir)
    processor = PlumProcessor(
        image_processor=llava_processor.image_processor,
        tokenizer=llava_processor.tokenizer,
        sam_image_size=config.sam_image_size,
        num_image_tokens=config.llava_config.image_seq_length,
        image_token=llava_processor.tokenizer.convert_ids_to_tokens(config.image_token_index),
    )
    return model, processor


# ---------------------------------------------------------------------------------------------- reference

# Reference (LISA-style) name → this model's name. Applied in order; the first match wins.
REFERENCE_RENAMES = [
    (r"^(?:base_model\.model\.)?model\.visual_model\.image_encoder\.", "sam_image_encoder."),
    (r"^(?:base_model\.model\.)?model\.visual_model\.prompt_encoder\.", "sam_prompt_encoder."),
    (r"^(?:base_model\.model\.)?model\.visual_model\.mask_decoder\.", "sam_mask_decoder."),
    (r"^(?:base_model\.model\.)?model\.text_hidden_fcs\.0\.", "query_projector.layers."),
    (r"^(?:base_model\.model\.)?model\.token_to_mask_fcs\.0\.", "span_tagger.classifier."),
    (r"^(?:base_model\.model\.)?bio_encoder\.encoder\.layers\.0\.", "span_tagger.encoder."),
    (
        r"^(?:base_model\.model\.)?mask_pooler\.mask_modulator\.projections\.(\d+)\.",
        r"feedback_pooler.film.\1.proj.",
    ),
    (r"^(?:base_model\.model\.)?mask_pooler\.queries$", "feedback_pooler.patch_queries"),
    (r"^(?:base_model\.model\.)?mask_pooler\.attn\.", "feedback_pooler.attention."),
    (r"^(?:base_model\.model\.)?model\.mm_projector\.0\.", "llava.model.multi_modal_projector.linear_1."),
    (r"^(?:base_model\.model\.)?model\.mm_projector\.2\.", "llava.model.multi_modal_projector.linear_2."),
    (r"^(?:base_model\.model\.)?model\.vision_tower\.vision_tower\.", "llava.model.vision_tower."),
    (r"^(?:base_model\.model\.)?model\.(embed_tokens|layers|norm)\b", r"llava.model.language_model.\1"),
    (r"^(?:base_model\.model\.)?lm_head\.", "llava.lm_head."),
]
# Reference keys that carry no weights of their own: aliases of the prompt encoder inside the mask pooler,
# the KL teacher copy, the feature-buffer snapshot, and the third FiLM projection the reference never applies.
REFERENCE_SKIPPED = [
    r"^(?:base_model\.model\.)?mask_pooler\.(prompt_encoder|block1|block2|activation\d|final_conv)\.",
    r"^(?:base_model\.model\.)?teacher_llm\.",
    r"^(?:base_model\.model\.)?seg_h_ref$",
    r"^(?:base_model\.model\.)?mask_pooler\.mask_modulator\.projections\.2\.",
    r"rotary_emb\.inv_freq$",
]


def rename_reference_key(key: str) -> str | None:
    """This model's name for a reference checkpoint key; None for keys that are deliberately skipped."""
    if any(re.search(pattern, key) for pattern in REFERENCE_SKIPPED):
        return None
    for pattern, replacement in REFERENCE_RENAMES:
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key)
    raise KeyError(f"unexpected key in the reference checkpoint: {key}")


def load_reference_state(
    model: PlumForConditionalGeneration, state_dict: dict, allow_missing_vision: bool = True
):
    """Loads a reference PLUM state dict. The CLIP tower may be absent (the reference loads it separately
    from `openai/clip-vit-large-patch14`); anything else missing is an error."""
    renamed = {}
    for key, tensor in state_dict.items():
        new = rename_reference_key(key)
        if new is None:
            continue
        if new == "feedback_pooler.patch_queries" and model.feedback_pooler is not None:
            tensor = tensor.reshape(model.feedback_pooler.patch_queries.shape)
        renamed[new] = tensor
    own = model.state_dict()
    unexpected = sorted(set(renamed) - set(own))
    missing = sorted(
        k
        for k in set(own) - set(renamed)
        if not (allow_missing_vision and k.startswith("llava.model.vision_tower."))
        and not k.startswith("kl_teacher.")
    )
    if unexpected or missing:
        raise KeyError(
            f"reference checkpoint: missing keys {missing[:10]}; unexpected keys {unexpected[:10]}"
        )
    for key, tensor in renamed.items():
        if own[key].shape != tensor.shape:
            raise ValueError(
                f"reference checkpoint: {key} has shape {tuple(tensor.shape)}, expected {tuple(own[key].shape)}"
            )
    model.load_state_dict(renamed, strict=False)
    return model


def load_checkpoint_file(path) -> dict:
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("module", state.get("state_dict", state)) if isinstance(state, dict) else state


def save(model, processor, out):
    out = Path(out)
    model.save_pretrained(out)  # safetensors, remote-code files and auto_map
    processor.save_pretrained(out)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m modeling_plum.convert", description=__doc__.splitlines()[0]
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", choices=["tiny"], help="a randomly initialised preset")
    source.add_argument("--sam", help="official SAM checkpoint (.pth), with --llava")
    source.add_argument(
        "--from-reference", metavar="CKPT", help="checkpoint saved by the reference PLUM code"
    )
    parser.add_argument("--llava", help="HF-format LLaVA folder")
    parser.add_argument("--corpus", nargs="*", help="text files to train the tiny tokenizer on")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.preset:
        corpus = None
        if args.corpus:
            corpus = [
                line for path in args.corpus for line in Path(path).read_text(encoding="utf-8").splitlines()
            ]
        model, processor = build_tiny(corpus)
    elif args.sam:
        if not args.llava:
            parser.error("--sam needs --llava")
        model, processor = from_llava_and_sam(args.llava, args.sam)
    else:
        if not args.llava:
            parser.error(
                "--from-reference needs --llava (the HF-format LLaVA the reference was trained from)"
            )
        from transformers import AutoProcessor, LlavaConfig

        state = load_checkpoint_file(args.from_reference)
        config = PlumConfig(
            llava_config=LlavaConfig.from_pretrained(args.llava),
            sam_size=sam_size_of(
                {k.split("visual_model.")[-1]: v for k, v in state.items() if "visual_model." in k}
            ),
        )
        model = load_reference_state(PlumForConditionalGeneration(config), state)
        llava_processor = AutoProcessor.from_pretrained(args.llava)
        processor = PlumProcessor(
            image_processor=llava_processor.image_processor,
            tokenizer=llava_processor.tokenizer,
            sam_image_size=config.sam_image_size,
            num_image_tokens=config.llava_config.image_seq_length,
        )
    print(f"wrote {save(model, processor, args.out)}")


if __name__ == "__main__":
    main()
