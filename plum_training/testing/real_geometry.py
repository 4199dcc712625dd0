"""What a user actually downloads, at shallow depth: an HF LLaVA-1.5 folder of the real geometry (CLIP ViT-L/14-336
with 576 image tokens, LLaMA width 4096 and vocabulary 32064, a byte-fallback `LlamaTokenizerFast`, fp16 weights
under llava-hf's own key names) and an official `segment_anything` SAM ViT-B `.pth`. Only the depth is cut (1 LLaMA
layer, 2 CLIP layers) so that it fits a CPU test; every width, token count and file format is the real one.

Also the reference PLUM's layout (LISA-style key names, one linear projector, CLIP ViT-L/14-224 with 256 image
tokens, `<im_start>` / `<im_end>`), written from the reference code's module definitions rather than from this
repository's rename table.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# llava-hf/llava-1.5-7b-hf, except for the depth
LLAVA_15 = {
    "vocab_size": 32064,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "text_layers": 1,
    "vision_layers": 2,
    "image_size": 336,
    "patch_size": 14,
}
# Legacy (transformers 4) key names, as the llava-hf checkpoints on the Hub carry them.
LEGACY_LLAVA_NAMES = [
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
]
CORPUS = [
    "A chat between a curious human and an artificial intelligence assistant.",
    "USER: What visible parts does the car in the image have? ASSISTANT: The car in the image has the following "
    "visible parts: door, headlight, license plate, mirror, wheel, and window.",
    "What visible parts does the dog in the image have in common with a cat? which a bird does not have?",
    "The airplane in the image has the following visible parts which a bird does not: engine, wheel, and window.",
    "What is the object in the image? It is a car. It is an airplane. It is a dog. It is an agricultural airplane.",
    "head ear eye nose mouth neck torso arm hand leg foot tail paw muzzle horn beak wing fin hair body cap pot",
    "wheel door window headlight license plate mirror handlebar saddle frame cab cargo box roof chimney propeller",
    "Ünïcödé façade naïve café — ☃ 日本 😀",  # byte fallback covers what the vocabulary does not
]


def train_llama_tokenizer(vocab_size: int = 1200, extra_special: tuple[str, ...] = ("<image>", "<pad>")):
    """A LLaMA-2-style tokenizer trained offline: SentencePiece-style BPE with byte fallback (`<0x00>`…`<0xFF>`
    after `<unk>`, `<s>`, `</s>`), built as transformers' `LlamaTokenizerFast` from its vocabulary and merges."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizerFast

    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=["▁"] + [chr(c) for c in range(33, 127)],
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS * 4, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = LlamaTokenizerFast(vocab=model["vocab"], merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": list(extra_special)})
    if "<pad>" in extra_special:
        tokenizer.pad_token = "<pad>"
    return tokenizer


def legacy_name(key: str) -> str:
    for new, old in LEGACY_LLAVA_NAMES:
        if key.startswith(new):
            return old + key[len(new) :]
    return key


def rename_to_legacy(folder: Path):
    """The weights of a saved LLaVA folder (shards and index) under the key names llava-hf's files use."""
    from safetensors.torch import load_file, save_file

    for shard in sorted(folder.glob("model*.safetensors")):
        state = load_file(str(shard))
        save_file({legacy_name(k): v for k, v in state.items()}, str(shard), metadata={"format": "pt"})
    index = folder / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        data["weight_map"] = {legacy_name(k): file for k, file in data["weight_map"].items()}
        index.write_text(json.dumps(data))


def write_llava_15(folder: Path, seed: int = 0) -> Path:
    """An HF LLaVA-1.5 folder as llava-hf ships it: fp16 safetensors with legacy key names, `LlavaProcessor`."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    g = LLAVA_15
    tokenizer = train_llama_tokenizer()
    text = LlamaConfig(
        vocab_size=g["vocab_size"],
        hidden_size=g["hidden_size"],
        intermediate_size=g["intermediate_size"],
        num_hidden_layers=g["text_layers"],
        num_attention_heads=g["num_attention_heads"],
        num_key_value_heads=g["num_attention_heads"],
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=g["vision_layers"],
        num_attention_heads=16,
        patch_size=g["patch_size"],
        image_size=g["image_size"],
        projection_dim=768,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(g["image_size"] // g["patch_size"]) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    torch.manual_seed(seed)
    with torch.device("cpu"):
        llava = LlavaForConditionalGeneration(config).to(torch.float16)
    llava.config.dtype = torch.float16
    llava.save_pretrained(folder)
    del llava
    rename_to_legacy(folder)
    size = g["image_size"]
    LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        ),
        tokenizer=tokenizer,
        patch_size=g["patch_size"],
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
    ).save_pretrained(folder)
    return folder


def write_sam(path: Path, size: str = "vit_b", seed: int = 0) -> Path:
    """An official-format SAM checkpoint (`segment_anything`'s own modules and names), randomly initialised."""
    from segment_anything import sam_model_registry

    torch.manual_seed(seed)
    sam = sam_model_registry[size]()
    torch.save(sam.state_dict(), path)
    return path


def peak_rss_bytes() -> int:
    """This process's peak resident memory since it started (`VmHWM`). Not `getrusage`'s `ru_maxrss`, which a child
    inherits from the process it was forked from."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


# ---------------------------------------------------------------------------------------------- reference layout


def reference_state_dict(
    hidden: int = 512,
    intermediate: int = 1376,
    layers: int = 2,
    vocab: int = 32002,
    clip_width: int = 1024,
    sam_state: dict | None = None,
    seed: int = 0,
) -> dict:
    """A state dict with the names and shapes the reference PLUM code saves (`PLUMForCausalLM` after
    `merge_and_unload`, vision tower removed), written from its module definitions:

    - LLaMA (`LlavaLlamaForCausalLM`): `model.embed_tokens`, `model.layers.N.{self_attn,mlp,...}`, `model.norm`,
      `lm_head`; one `nn.Linear` projector `model.mm_projector` (LLaVA-LLaMA-2 lightning).
    - SAM ViT-H (here any size) under `model.visual_model.`.
    - `model.text_hidden_fcs.0` = Sequential(Linear(h, h), ReLU, Linear(h, 256), Dropout) → keys `.0`, `.2`.
    - `model.token_to_mask_fcs.0` = Sequential(Linear(h, h), ReLU, Linear(h, 3)).
    - `bio_encoder.encoder.layers.0`: `nn.TransformerEncoderLayer(h, 8)` (feed-forward 2048).
    - `mask_pooler`: `queries (h*w, 1, 256)`, `attn` (MultiheadAttention(256, 8)), `mask_modulator.projections.{0,1,2}`
      (FiLM for the 4-, 16- and 256-channel convs), and aliases of the prompt encoder (`prompt_encoder.*`,
      `block1`, `block2`, `final_conv`).
    """
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator) * 0.02

    state = {"model.embed_tokens.weight": rand(vocab, hidden), "model.norm.weight": torch.ones(hidden)}
    for n in range(layers):
        p = f"model.layers.{n}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            state[p + f"self_attn.{proj}.weight"] = rand(hidden, hidden)
        state[p + "self_attn.rotary_emb.inv_freq"] = torch.ones(64)  # older transformers saved it
        state[p + "mlp.gate_proj.weight"] = rand(intermediate, hidden)
        state[p + "mlp.up_proj.weight"] = rand(intermediate, hidden)
        state[p + "mlp.down_proj.weight"] = rand(hidden, intermediate)
        state[p + "input_layernorm.weight"] = torch.ones(hidden)
        state[p + "post_attention_layernorm.weight"] = torch.ones(hidden)
    state["model.mm_projector.weight"] = rand(hidden, clip_width)
    state["model.mm_projector.bias"] = rand(hidden)
    state["lm_head.weight"] = rand(vocab, hidden)
    for key, tensor in (sam_state or {}).items():
        state["model.visual_model." + key] = tensor
    state["model.text_hidden_fcs.0.0.weight"] = rand(hidden, hidden)
    state["model.text_hidden_fcs.0.0.bias"] = rand(hidden)
    state["model.text_hidden_fcs.0.2.weight"] = rand(256, hidden)
    state["model.text_hidden_fcs.0.2.bias"] = rand(256)
    state["model.token_to_mask_fcs.0.0.weight"] = rand(hidden, hidden)
    state["model.token_to_mask_fcs.0.0.bias"] = rand(hidden)
    state["model.token_to_mask_fcs.0.2.weight"] = rand(3, hidden)
    state["model.token_to_mask_fcs.0.2.bias"] = rand(3)
    bio = "bio_encoder.encoder.layers.0."
    state[bio + "self_attn.in_proj_weight"] = rand(3 * hidden, hidden)
    state[bio + "self_attn.in_proj_bias"] = rand(3 * hidden)
    state[bio + "self_attn.out_proj.weight"] = rand(hidden, hidden)
    state[bio + "self_attn.out_proj.bias"] = rand(hidden)
    state[bio + "linear1.weight"] = rand(2048, hidden)
    state[bio + "linear1.bias"] = rand(2048)
    state[bio + "linear2.weight"] = rand(hidden, 2048)
    state[bio + "linear2.bias"] = rand(hidden)
    for norm in ("norm1", "norm2"):
        state[bio + f"{norm}.weight"] = torch.ones(hidden)
        state[bio + f"{norm}.bias"] = torch.zeros(hidden)
    state["mask_pooler.queries"] = rand(64 * 64, 1, 256)
    state["mask_pooler.attn.in_proj_weight"] = rand(3 * 256, 256)
    state["mask_pooler.attn.in_proj_bias"] = rand(3 * 256)
    state["mask_pooler.attn.out_proj.weight"] = rand(256, 256)
    state["mask_pooler.attn.out_proj.bias"] = rand(256)
    for index, channels in enumerate((4, 16, 256)):
        state[f"mask_pooler.mask_modulator.projections.{index}.weight"] = rand(2 * channels, 256)
        state[f"mask_pooler.mask_modulator.projections.{index}.bias"] = rand(2 * channels)
    for key, tensor in (sam_state or {}).items():
        if key.startswith("prompt_encoder."):
            state["mask_pooler." + key] = tensor
    state["mask_pooler.block1.0.0.weight"] = state.get(
        "model.visual_model.prompt_encoder.mask_downscaling.0.weight"
    )
    return {k: v for k, v in state.items() if v is not None}


def write_reference_tokenizer(folder: Path):
    """The reference's tokenizer: LLaMA-2's (here trained small) plus `<im_start>`, `<im_end>`, pad = unk."""
    tokenizer = train_llama_tokenizer(extra_special=())
    tokenizer.add_tokens(["<im_start>", "<im_end>"], special_tokens=True)
    tokenizer.pad_token = tokenizer.unk_token
    tokenizer.save_pretrained(folder)
    return tokenizer


def write_clip_224(folder: Path, layers: int = 2, seed: int = 0) -> Path:
    """`openai/clip-vit-large-patch14`'s vision geometry (224 px, patch 14, width 1024) at shallow depth, with its
    image processor."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=layers,
        num_attention_heads=16,
        patch_size=14,
        image_size=224,
        projection_dim=768,
    )
    CLIPVisionModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(
        folder
    )
    return folder
