# Copyright 2026 The PLUM / PARTONOMY release team. Licensed under the Apache License, Version 2.0.
"""Write a loadable PLUM folder (sharded safetensors in one dtype + remote code + processor).

    python -m modeling_plum.convert --preset tiny --out DIR [--corpus FILE ...]
    python -m modeling_plum.convert --llava LLAVA_HF_DIR --sam sam_vit_h_4b8939.pth --out DIR [--dtype bfloat16]
    python -m modeling_plum.convert --from-reference PLUM_CKPT --clip CLIP_DIR --out DIR [--tokenizer DIR]

`--preset tiny` trains a small tokenizer offline with `tokenizers` and initialises the tiny architecture randomly.
`--llava/--sam` builds PLUM from an HF-format LLaVA (e.g. llava-hf/llava-1.5-13b-hf) and an official SAM checkpoint
(vit_b / vit_l / vit_h read off the tensor shapes); PLUM's new heads are initialised. `--from-reference` imports a
checkpoint of the reference PLUM code (LISA-style names, the geometry of LLaVA-LLaMA-2-13B lightning: one linear
projector, CLIP ViT-L/14 at 224 px, `<im_start>`/`<im_end>`), reading its geometry off the tensor shapes; the CLIP
tower comes from `--clip` (the reference saves its merged model without it). A missing or unexpected key is an
error that names it.

The model is built on the meta device and the weights are moved into it, so that the peak memory stays near the
size of the inputs plus the size of the output. Every tensor is saved in `--dtype` (SAM's 2 x 128 random Fourier
projection stays float32: SAM builds its positional grid in float32); the config carries that one dtype.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import uuid
from pathlib import Path

import torch

from .configuration_plum import SAM_SIZES, TINY_VOCAB_SIZE, PlumConfig
from .modeling_plum import PlumForConditionalGeneration
from .processing_plum import PlumProcessor

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]
IMAGE_TOKEN = "<image>"
SEG_TOKEN = "[SEG]"  # LISA's segmentation token, for `segmentation_query="seg_token"` (the ablation)
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
DEFAULT_MAX_SHARD_SIZE = "5GB"
# The reference PLUM's conversation template (LLaVA "llava_v1") and image delimiters.
REFERENCE_SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
REFERENCE_IMAGE_START, REFERENCE_IMAGE_END = "<im_start>", "<im_end>"
LLAMA_HEAD_DIM = 128  # every LLaMA-2 size uses 128-wide attention heads

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


def train_tiny_tokenizer(corpus: list[str], vocab_size: int, seg_token: bool = False):
    """A LLaMA-style (Metaspace BPE) fast tokenizer trained offline; `<image>` (then `[SEG]`, when asked) come last."""
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
    extra = [IMAGE_TOKEN, SEG_TOKEN] if seg_token else [IMAGE_TOKEN]
    tokenizer.add_special_tokens(extra)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        additional_special_tokens=extra,
        model_max_length=512,
    )


def square_clip_image_processor(size: int):
    """CLIP's image processor for a tower of `size` px: shortest side resized to it, then a centre crop."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def tiny_processor(config: PlumConfig, tokenizer) -> PlumProcessor:
    return PlumProcessor(
        image_processor=square_clip_image_processor(config.llava_config.vision_config.image_size),
        tokenizer=tokenizer,
        sam_image_size=config.sam_image_size,
        num_image_tokens=config.llava_config.image_seq_length,
        image_token=IMAGE_TOKEN,
        max_length=config.text_config.max_position_embeddings,
    )


def fit_to_tokenizer(llava_config, tokenizer):
    """A LLaVA config's vocabulary size, special-token ids and image token id set from `tokenizer` (one trained
    here, whose ids are not the preset's)."""
    text = llava_config.text_config
    text.vocab_size = len(tokenizer)
    text.pad_token_id, text.bos_token_id, text.eos_token_id = (
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
    )
    llava_config.image_token_index = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def build_tiny(corpus: list[str] | None = None, seed: int = 0, seg_token: bool = False, **overrides):
    """The tiny preset with a freshly trained tokenizer: ids come from the tokenizer, never constants. `seg_token`
    adds LISA's `[SEG]` to the vocabulary (the ablation's `segmentation_query="seg_token"` uses it)."""
    seg_token = seg_token or overrides.get("segmentation_query") == "seg_token"
    tokenizer = train_tiny_tokenizer(corpus or _DEFAULT_CORPUS, TINY_VOCAB_SIZE, seg_token)
    if seg_token:
        overrides.setdefault("seg_token_index", tokenizer.convert_tokens_to_ids(SEG_TOKEN))
    config = PlumConfig.from_preset("tiny", **overrides)
    fit_to_tokenizer(config.llava_config, tokenizer)
    torch.manual_seed(seed)
    model = PlumForConditionalGeneration(config)
    processor = tiny_processor(config, tokenizer)
    if config.segmentation_query == "seg_token":
        processor.seg_token = SEG_TOKEN
    return model, processor


# ---------------------------------------------------------------------------------------------------- weights


def _is_kept_in_float32(name: str) -> bool:
    return any(pattern in name for pattern in PlumForConditionalGeneration._keep_in_fp32_modules_strict)


def assign_state(module: torch.nn.Module, state_dict: dict, what: str, dtype: torch.dtype, prefix: str = ""):
    """Moves `state_dict` into `module` (built on the meta device) in `dtype`, without a second copy: every
    missing or unexpected key and every shape mismatch is an error naming it. `prefix` is the module's name
    inside the model (for the float32 exceptions)."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise KeyError(
            f"{what}: missing keys {missing[:10]}{' …' if len(missing) > 10 else ''}; "
            f"unexpected keys {unexpected[:10]}{' …' if len(unexpected) > 10 else ''}"
        )
    converted = {}
    for key, tensor in state_dict.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{what}: {key} has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}"
            )
        if tensor.is_floating_point():
            tensor = tensor.float() if _is_kept_in_float32(prefix + key) else tensor.to(dtype)
        converted[key] = tensor.contiguous()
    module.load_state_dict(converted, strict=True, assign=True)


def initialise_new_modules(model: PlumForConditionalGeneration, modules, dtype: torch.dtype, seed: int = 0):
    """Materialises meta-device modules on the CPU with PLUM's own initialisation (`_init_weights`), in `dtype`."""
    torch.manual_seed(seed)
    for module in modules:
        if module is None:
            continue
        module.to_empty(device="cpu")
        module.apply(model._init_weights)
        module.to(dtype)


def load_weights_file(path) -> dict:
    """A state dict from a `.safetensors` / `.bin` / `.pt` / `.pth` file, or from a folder of (sharded) files as
    `save_pretrained` writes them. Pickled files are memory-mapped where torch can, and loaded weights-only."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin weights in {path}")
        state = {}
        for file in files:
            state.update(load_weights_file(file))
        return state
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a legacy (non-zip) file cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        state = state.get("module", state.get("state_dict", state))
    return state


# ---------------------------------------------------------------------------------------------------- SAM


def _sam_tensor(state_dict: dict, name: str, prefix: str = ""):
    key = next((k for k in state_dict if k.endswith(prefix + name)), None)
    if key is None:
        raise KeyError(f"not a SAM checkpoint: no {name}")
    return state_dict[key]


def sam_size_of(state_dict: dict) -> str | None:
    """vit_b / vit_l / vit_h from the width of the SAM image encoder's patch embedding; None for another width."""
    width = _sam_tensor(state_dict, "image_encoder.patch_embed.proj.weight").shape[0]
    return next((name for name, size in SAM_SIZES.items() if size["sam_encoder_dim"] == width), None)


def sam_geometry(state_dict: dict) -> dict:
    """The `PlumConfig` SAM fields of a segment_anything state dict, read off its tensor shapes: an official vit_b / vit_l
    / vit_h by name, any other (a small SAM trained for tests or the toy) field by field. The mask decoder's head count
    is not in the weights; every official SAM uses 8, which `PlumConfig` assumes."""
    width, _, patch, _ = _sam_tensor(state_dict, "image_encoder.patch_embed.proj.weight").shape
    grid = _sam_tensor(state_dict, "image_encoder.pos_embed").shape[1]
    blocks = sorted(
        {int(m.group(1)) for k in state_dict if (m := re.search(r"image_encoder\.blocks\.(\d+)\.", k))}
    )
    spans = {b: _sam_tensor(state_dict, f"image_encoder.blocks.{b}.attn.rel_pos_h").shape for b in blocks}
    windowed = {(n + 1) // 2 for b, (n, _) in spans.items() if (n + 1) // 2 != grid}
    layers = {
        int(m.group(1))
        for k in state_dict
        if (m := re.search(r"mask_decoder\.transformer\.layers\.(\d+)\.", k))
    }
    geometry = {
        "sam_image_size": grid * patch,
        "sam_patch_size": patch,
        "sam_encoder_dim": width,
        "sam_encoder_depth": len(blocks),
        "sam_encoder_heads": width // spans[blocks[0]][1],
        "sam_global_attn_indexes": [b for b, (n, _) in spans.items() if (n + 1) // 2 == grid],
        "sam_window_size": windowed.pop() if windowed else grid,
        "sam_prompt_dim": _sam_tensor(state_dict, "image_encoder.neck.0.weight").shape[0],
        "sam_mask_in_chans": 4 * _sam_tensor(state_dict, "prompt_encoder.mask_downscaling.0.weight").shape[0],
        "sam_decoder_depth": len(layers),
        "sam_decoder_mlp_dim": _sam_tensor(
            state_dict, "mask_decoder.transformer.layers.0.mlp.lin1.weight"
        ).shape[0],
    }
    name = sam_size_of(state_dict)
    if name is not None and all(geometry[k] == v for k, v in SAM_SIZES[name].items()):
        return {"sam_size": name}
    return geometry


SAM_PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")


def load_sam(model: PlumForConditionalGeneration, sam_state: dict, dtype: torch.dtype, prefix: str = ""):
    """Moves `{prefix}image_encoder.*`, `prompt_encoder.*`, `mask_decoder.*` into the model's SAM modules."""
    leftovers = [k for k in sam_state if not k.startswith(tuple(f"{prefix}{p}." for p in SAM_PARTS))]
    if leftovers:
        raise KeyError(f"unexpected SAM keys: {leftovers[:10]}")
    for part in SAM_PARTS:
        head = f"{prefix}{part}."
        assign_state(
            getattr(model, f"sam_{part}"),
            {k[len(head) :]: v for k, v in sam_state.items() if k.startswith(head)},
            f"SAM {part}",
            dtype,
            prefix=f"sam_{part}.",
        )


def _heads(model: PlumForConditionalGeneration) -> list:
    return [model.span_tagger, model.query_projector, model.feedback_pooler]


def from_llava_and_sam(
    llava_dir,
    sam_path,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    config_overrides: dict | None = None,
):
    """PLUM from an HF-format LLaVA folder and a segment_anything SAM `.pth`, in `dtype`; the new heads are initialised.
    `config_overrides` set other `PlumConfig` fields (the heads' sizes, loss weights ...).

    LLaVA is loaded by transformers itself (its key names, shards and dtype handling); the PLUM shell is built on
    the meta device and receives the loaded modules, so no weight exists twice."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    if not Path(llava_dir).is_dir():
        raise FileNotFoundError(
            f"--llava {llava_dir}: no such LLaVA folder (an HF-format LLaVA, e.g. llava-1.5-13b-hf)"
        )
    if not Path(sam_path).is_file():
        raise FileNotFoundError(f"--sam {sam_path}: no such SAM checkpoint (e.g. sam_vit_h_4b8939.pth)")
    sam_state = load_weights_file(sam_path)
    llava = LlavaForConditionalGeneration.from_pretrained(llava_dir, dtype=dtype)
    config = PlumConfig(
        llava_config=llava.config.to_dict(), **sam_geometry(sam_state), **dict(config_overrides or {})
    )
    config.dtype = dtype
    with torch.device("meta"):
        model = PlumForConditionalGeneration(config)
    llava.config = model.config.llava_config
    model.llava = llava
    load_sam(model, sam_state, dtype)
    del sam_state
    initialise_new_modules(model, _heads(model), dtype, seed)
    llava_processor = AutoProcessor.from_pretrained(llava_dir)
    processor = PlumProcessor(
        image_processor=llava_processor.image_processor,
        tokenizer=llava_processor.tokenizer,
        sam_image_size=config.sam_image_size,
        num_image_tokens=config.llava_config.image_seq_length,
        image_token=llava_processor.tokenizer.convert_ids_to_tokens(config.image_token_index),
    )
    return model, processor


# ---------------------------------------------------------------------------------------------------- reference

_PREFIX = r"^(?:base_model\.model\.)?"
# Reference (LISA-style) name → this model's name. Applied in order; the first match wins.
REFERENCE_RENAMES = [
    (_PREFIX + r"model\.visual_model\.image_encoder\.", "sam_image_encoder."),
    (_PREFIX + r"model\.visual_model\.prompt_encoder\.", "sam_prompt_encoder."),
    (_PREFIX + r"model\.visual_model\.mask_decoder\.", "sam_mask_decoder."),
    (_PREFIX + r"model\.text_hidden_fcs\.0\.", "query_projector.layers."),
    (_PREFIX + r"model\.token_to_mask_fcs\.0\.", "span_tagger.classifier."),
    (_PREFIX + r"bio_encoder\.encoder\.layers\.0\.", "span_tagger.encoder."),
    (_PREFIX + r"mask_pooler\.mask_modulator\.projections\.(\d+)\.", r"feedback_pooler.film.\1.proj."),
    (_PREFIX + r"mask_pooler\.queries$", "feedback_pooler.patch_queries"),
    (_PREFIX + r"mask_pooler\.attn\.", "feedback_pooler.attention."),
    (_PREFIX + r"model\.mm_projector\.(weight|bias)$", r"llava.model.multi_modal_projector.linear.\1"),
    (_PREFIX + r"model\.mm_projector\.0\.", "llava.model.multi_modal_projector.linear_1."),
    (_PREFIX + r"model\.mm_projector\.2\.", "llava.model.multi_modal_projector.linear_2."),
    (_PREFIX + r"model\.vision_tower\.vision_tower\.", "llava.model.vision_tower."),
    (_PREFIX + r"model\.(embed_tokens|layers|norm)\b", r"llava.model.language_model.\1"),
    (_PREFIX + r"lm_head\.", "llava.lm_head."),
]
# Reference keys that carry no weights of their own: aliases of the prompt encoder inside the mask pooler,
# the KL teacher copy, the feature-buffer snapshot, and the third FiLM projection the reference never applies.
REFERENCE_SKIPPED = [
    _PREFIX + r"mask_pooler\.(prompt_encoder|block1|block2|activation\d|final_conv)\.",
    _PREFIX + r"teacher_llm\.",
    _PREFIX + r"seg_h_ref$",
    _PREFIX + r"mask_pooler\.mask_modulator\.projections\.2\.",
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


def _reference_tensor(state: dict, name: str):
    for key in (name, "base_model.model." + name):
        if key in state:
            return state[key]
    raise KeyError(f"reference checkpoint: no {name}")


def reference_config(state: dict, vision_config, tokenizer) -> PlumConfig:
    """The PLUM config of a reference checkpoint, read off its tensor shapes (LLaMA width, depth and MLP width;
    projector type; SAM size), the CLIP tower's config and the tokenizer (vocabulary, `<image>` id)."""
    from transformers import LlamaConfig, LlavaConfig

    hidden = _reference_tensor(state, "model.embed_tokens.weight").shape[1]
    layers = 1 + max(
        int(m.group(1)) for k in state if (m := re.match(_PREFIX + r"model\.layers\.(\d+)\.", k)) is not None
    )
    intermediate = _reference_tensor(state, "model.layers.0.mlp.gate_proj.weight").shape[0]
    linear = any(re.match(_PREFIX + r"model\.mm_projector\.weight$", k) for k in state)
    sam_state = {k.split("visual_model.", 1)[1]: v for k, v in state.items() if "visual_model." in k}
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=hidden // LLAMA_HEAD_DIM,
        num_key_value_heads=hidden // LLAMA_HEAD_DIM,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.unk_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    llava = LlavaConfig(
        vision_config=vision_config,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(vision_config.image_size // vision_config.patch_size) ** 2,
        vision_feature_select_strategy="default",  # the reference's "patch": CLS dropped
        vision_feature_layer=-2,
    )
    return PlumConfig(
        llava_config=llava,
        **sam_geometry(sam_state),
        projector_type="linear" if linear else "mlp",
        feedback_add_no_mask=False,  # the reference's pooler output is the whole dense prompt
    )


def _pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """Embedding / LM-head rows for tokens the reference vocabulary lacks (`<image>`): the mean row."""
    if tensor.shape[0] >= rows:
        return tensor
    extra = tensor.float().mean(0, keepdim=True).to(tensor.dtype).expand(rows - tensor.shape[0], -1)
    return torch.cat([tensor, extra])


def load_reference_state(model: PlumForConditionalGeneration, state_dict: dict, dtype: torch.dtype):
    """Moves a reference PLUM state dict into `model` (built on the meta device). The CLIP tower may be absent
    (the reference saves its merged model without it; then it must already be loaded into `model`); anything
    else missing is an error."""
    renamed = {}
    for key, tensor in state_dict.items():
        new = rename_reference_key(key)
        if new is None:
            continue
        if new == "feedback_pooler.patch_queries" and model.feedback_pooler is not None:
            tensor = tensor.reshape(model.feedback_pooler.patch_queries.shape)
        renamed[new] = tensor
    vocab = model.config.text_config.vocab_size
    for key in ("llava.model.language_model.embed_tokens.weight", "llava.lm_head.weight"):
        if key in renamed:
            renamed[key] = _pad_rows(renamed[key], vocab)
    own = {k for k in model.state_dict() if not k.startswith("kl_teacher.")}
    vision_loaded = not next(model.llava.model.vision_tower.parameters()).is_meta
    if vision_loaded:
        renamed = {k: v for k, v in renamed.items() if not k.startswith("llava.model.vision_tower.")}
        own = {k for k in own if not k.startswith("llava.model.vision_tower.")}
    unexpected = sorted(set(renamed) - own)
    missing = sorted(own - set(renamed))
    if unexpected or missing:
        raise KeyError(
            f"reference checkpoint: missing keys {missing[:10]}; unexpected keys {unexpected[:10]}"
        )
    modules = {
        "llava.model.language_model.": model.llava.model.language_model,
        "llava.model.multi_modal_projector.": model.llava.model.multi_modal_projector,
        "llava.lm_head.": model.llava.lm_head,
        "sam_image_encoder.": model.sam_image_encoder,
        "sam_prompt_encoder.": model.sam_prompt_encoder,
        "sam_mask_decoder.": model.sam_mask_decoder,
        "span_tagger.": model.span_tagger,
        "query_projector.": model.query_projector,
        "feedback_pooler.": model.feedback_pooler,
    }
    if not vision_loaded:
        modules["llava.model.vision_tower."] = model.llava.model.vision_tower
    for prefix, module in modules.items():
        if module is None:
            continue
        part = {k[len(prefix) :]: v for k, v in renamed.items() if k.startswith(prefix)}
        assign_state(module, part, f"reference checkpoint ({prefix[:-1]})", dtype, prefix=prefix)
    return model


def from_reference(checkpoint, clip_dir, tokenizer_dir=None, dtype: torch.dtype = torch.bfloat16):
    """PLUM from a reference checkpoint (file or folder), the CLIP tower it was trained with
    (`openai/clip-vit-large-patch14`, an HF folder) and its tokenizer (default: the checkpoint's folder)."""
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    state = load_weights_file(checkpoint)
    tokenizer_dir = tokenizer_dir or (checkpoint if Path(checkpoint).is_dir() else None)
    if tokenizer_dir is None:
        raise ValueError(
            "--from-reference with a single file needs --tokenizer (the reference's tokenizer folder)"
        )
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token  # as the reference does
    config = reference_config(state, CLIPVisionConfig.from_pretrained(clip_dir), tokenizer)
    config.dtype = dtype
    with torch.device("meta"):
        model = PlumForConditionalGeneration(config)
    has_vision = any(re.match(_PREFIX + r"model\.vision_tower\.vision_tower\.", k) for k in state)
    if not has_vision:
        model.llava.model.vision_tower = CLIPVisionModel.from_pretrained(clip_dir, dtype=dtype)
    load_reference_state(model, state, dtype)
    del state
    vocab = tokenizer.get_vocab()
    processor = PlumProcessor(
        image_processor=CLIPImageProcessor.from_pretrained(clip_dir),
        tokenizer=tokenizer,
        sam_image_size=config.sam_image_size,
        num_image_tokens=config.llava_config.image_seq_length,
        image_token=IMAGE_TOKEN,
        system_prompt=REFERENCE_SYSTEM_PROMPT,
        image_start_token=REFERENCE_IMAGE_START if REFERENCE_IMAGE_START in vocab else None,
        image_end_token=REFERENCE_IMAGE_END if REFERENCE_IMAGE_END in vocab else None,
    )
    return model, processor


# ---------------------------------------------------------------------------------------------------- saving


def save(model, processor, out, max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE):
    """Writes the folder atomically: into a temporary sibling first, renamed when complete."""
    out = Path(out)
    partial = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        model.save_pretrained(partial, max_shard_size=max_shard_size)  # safetensors, remote code, auto_map
        processor.save_pretrained(partial)
        if out.exists():
            shutil.rmtree(out)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def main(argv=None) -> int:
    """The command line; a missing or unreadable input is one line on stderr and exit code 2."""
    try:
        return _main(argv)
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modeling_plum.convert", description=__doc__.splitlines()[0]
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", choices=["tiny"], help="a randomly initialised preset")
    source.add_argument("--sam", help="official SAM checkpoint (.pth), with --llava")
    source.add_argument(
        "--from-reference",
        metavar="CKPT",
        help="checkpoint (file or folder) saved by the reference PLUM code",
    )
    parser.add_argument("--llava", help="HF-format LLaVA folder (with --sam)")
    parser.add_argument(
        "--clip", help="HF CLIP folder the reference was trained with (with --from-reference)"
    )
    parser.add_argument(
        "--tokenizer", help="the reference's tokenizer folder (default: the checkpoint folder)"
    )
    parser.add_argument("--corpus", nargs="*", help="text files to train the tiny tokenizer on")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        help="dtype of every saved tensor (default: bfloat16, the paper's training precision; float32 for the "
        "tiny preset, which trains on CPUs)",
    )
    parser.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE, help="safetensors shard size")
    parser.add_argument(
        "--config-overrides",
        metavar="JSON",
        help="other PlumConfig fields, with --llava/--sam: '{\"span_ffn_dim\": 256}' (sizes of the new heads ...)",
    )
    parser.add_argument("--seed", type=int, default=0, help="initialisation of the new heads")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    dtype = DTYPES[args.dtype or ("float32" if args.preset else "bfloat16")]
    if args.preset:
        corpus = None
        if args.corpus:
            corpus = [
                line for path in args.corpus for line in Path(path).read_text(encoding="utf-8").splitlines()
            ]
        model, processor = build_tiny(corpus, seed=args.seed)
        model = model.to(dtype)
        model.config.dtype = dtype
        model.config.sync_sub_config_dtypes()
    elif args.sam:
        if not args.llava:
            parser.error("--sam needs --llava")
        overrides = json.loads(args.config_overrides) if args.config_overrides else None
        model, processor = from_llava_and_sam(args.llava, args.sam, dtype, args.seed, overrides)
    else:
        if not args.clip:
            parser.error("--from-reference needs --clip (the CLIP tower the reference was trained with)")
        model, processor = from_reference(args.from_reference, args.clip, args.tokenizer, dtype)
    print(f"wrote {save(model, processor, args.out, args.max_shard_size)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
