"""Conversion: the tiny preset CLI, LLaVA + official SAM checkpoints, and reference (LISA-style) checkpoints."""

import copy
import re

import pytest
import torch
from safetensors.torch import load_file

from modeling_plum import PlumForConditionalGeneration
from modeling_plum.convert import build_tiny, from_llava_and_sam, load_reference_state, main, sam_size_of


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_tiny()


def test_tiny_preset_cli(tmp_path):
    main(["--preset", "tiny", "--out", str(tmp_path / "tiny")])
    out = tmp_path / "tiny"
    for name in (
        "model.safetensors",
        "config.json",
        "modeling_plum.py",
        "configuration_plum.py",
        "processing_plum.py",
        "processor_config.json",
        "tokenizer.json",
    ):
        assert (out / name).exists(), name
    weights = load_file(str(out / "model.safetensors"))
    assert any(k.startswith("sam_mask_decoder.") for k in weights)
    import json

    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_plum.PlumForConditionalGeneration"
    tokenizer = json.loads((out / "tokenizer.json").read_text())
    image_id = next(t["id"] for t in tokenizer["added_tokens"] if t["content"] == "<image>")
    assert config["llava_config"]["image_token_index"] == image_id  # ids come from the tokenizer


def test_llava_and_official_sam(tiny, tmp_path):
    from segment_anything import sam_model_registry
    from transformers import CLIPImageProcessor, LlavaProcessor

    model, processor = tiny
    model.llava.save_pretrained(tmp_path / "llava")
    LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}),
        tokenizer=processor.tokenizer,
        patch_size=16,
        image_token="<image>",
    ).save_pretrained(tmp_path / "llava")
    torch.manual_seed(3)
    sam = sam_model_registry["vit_b"]()
    torch.save(sam.state_dict(), tmp_path / "sam_vit_b.pth")

    converted, converted_processor = from_llava_and_sam(tmp_path / "llava", tmp_path / "sam_vit_b.pth")
    assert converted.config.sam_size == "vit_b" and converted.config.sam_encoder_dim == 768
    assert torch.equal(converted.llava.lm_head.weight, model.llava.lm_head.weight)
    assert torch.equal(
        converted.sam_image_encoder.patch_embed.proj.weight, sam.image_encoder.patch_embed.proj.weight
    )
    assert torch.equal(converted.sam_mask_decoder.iou_token.weight, sam.mask_decoder.iou_token.weight)
    assert converted_processor.sam_image_size == 1024 and converted_processor.num_image_tokens == 16

    state = sam.state_dict()
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(KeyError, match=r"SAM mask_decoder: missing keys \['iou_token.weight'\]"):
        from_llava_and_sam(tmp_path / "llava", tmp_path / "broken.pth")
    with pytest.raises(KeyError, match="not a SAM checkpoint"):
        sam_size_of({"foo": torch.zeros(1)})


# This model's names → the reference code's names (its LLaVA is the original, un-converted layout).
TO_REFERENCE = [
    (r"^sam_image_encoder\.", "model.visual_model.image_encoder."),
    (r"^sam_prompt_encoder\.", "model.visual_model.prompt_encoder."),
    (r"^sam_mask_decoder\.", "model.visual_model.mask_decoder."),
    (r"^query_projector\.layers\.", "model.text_hidden_fcs.0."),
    (r"^span_tagger\.classifier\.", "model.token_to_mask_fcs.0."),
    (r"^span_tagger\.encoder\.", "bio_encoder.encoder.layers.0."),
    (r"^feedback_pooler\.film\.(\d)\.proj\.", r"mask_pooler.mask_modulator.projections.\1."),
    (r"^feedback_pooler\.patch_queries$", "mask_pooler.queries"),
    (r"^feedback_pooler\.attention\.", "mask_pooler.attn."),
    (r"^llava\.model\.multi_modal_projector\.linear_1\.", "model.mm_projector.0."),
    (r"^llava\.model\.multi_modal_projector\.linear_2\.", "model.mm_projector.2."),
    (r"^llava\.model\.vision_tower\.", "model.vision_tower.vision_tower."),
    (r"^llava\.model\.language_model\.", "model."),
    (r"^llava\.lm_head\.", "lm_head."),
]


def reference_state_dict(model):
    state = {}
    for key, tensor in model.state_dict().items():
        for pattern, replacement in TO_REFERENCE:
            if re.search(pattern, key):
                state[re.sub(pattern, replacement, key)] = tensor.clone()
                break
        else:
            raise AssertionError(f"no reference name for {key}")
    # what the reference also saves: the pooler's aliases of the prompt encoder, its unused third FiLM
    for key, tensor in model.sam_prompt_encoder.state_dict().items():
        state[f"mask_pooler.prompt_encoder.{key}"] = tensor.clone()
    state["mask_pooler.block1.0.0.weight"] = model.sam_prompt_encoder.mask_downscaling[0].weight.clone()
    state["mask_pooler.mask_modulator.projections.2.weight"] = torch.zeros(2 * 64, 64)
    state["mask_pooler.queries"] = state["mask_pooler.queries"].reshape(-1, 1, 64)
    return state


def test_reference_checkpoint_import(tiny):
    model, _ = tiny
    state = reference_state_dict(model)
    fresh = PlumForConditionalGeneration(copy.deepcopy(model.config))
    load_reference_state(fresh, state)
    for key, tensor in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], tensor), key

    without_vision = {k: v for k, v in state.items() if not k.startswith("model.vision_tower.")}
    load_reference_state(
        PlumForConditionalGeneration(copy.deepcopy(model.config)), without_vision
    )  # CLIP loads apart

    with pytest.raises(
        KeyError, match="unexpected key in the reference checkpoint: model.seg_token_fc.weight"
    ):
        load_reference_state(fresh, {**state, "model.seg_token_fc.weight": torch.zeros(1)})
    missing = dict(state)
    del missing["model.token_to_mask_fcs.0.2.bias"]
    with pytest.raises(KeyError, match=r"missing keys \['span_tagger.classifier.2.bias'\]"):
        load_reference_state(fresh, missing)
