"""Conversion: the tiny preset CLI (one dtype, shards), LLaVA + official SAM checkpoints, and the reference PLUM's own
checkpoint layout and geometry (linear projector, CLIP-224, `<im_start>`/`<im_end>`, its chat template)."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModel, AutoProcessor

from modeling_plum.convert import (
    REFERENCE_SYSTEM_PROMPT,
    build_tiny,
    from_llava_and_sam,
    main,
    sam_size_of,
)
from plum_training.testing.real_geometry import (
    reference_state_dict,
    write_clip_224,
    write_reference_tokenizer,
)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_tiny()


@pytest.fixture(scope="module")
def sam_vit_b():
    from segment_anything import sam_model_registry

    torch.manual_seed(3)
    return sam_model_registry["vit_b"]()


def test_tiny_preset_cli_in_one_dtype_and_shards(tmp_path):
    main(
        [
            "--preset",
            "tiny",
            "--out",
            str(tmp_path / "tiny"),
            "--dtype",
            "bfloat16",
            "--max-shard-size",
            "2MB",
        ]
    )
    out = tmp_path / "tiny"
    for name in (
        "model.safetensors.index.json",
        "config.json",
        "modeling_plum.py",
        "configuration_plum.py",
        "processing_plum.py",
        "processor_config.json",
        "tokenizer.json",
    ):
        assert (out / name).exists(), name
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1  # --max-shard-size
    dtypes = set()
    for shard in shards:
        with safe_open(str(shard), "pt") as f:
            dtypes |= {(f.get_slice(k).get_dtype(), "gaussian_matrix" in k) for k in f.keys()}
    assert dtypes == {("BF16", False), ("F32", True)}
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_plum.PlumForConditionalGeneration"
    assert config["dtype"] == config["llava_config"]["text_config"]["dtype"] == "bfloat16"
    tokenizer = json.loads((out / "tokenizer.json").read_text())
    image_id = next(t["id"] for t in tokenizer["added_tokens"] if t["content"] == "<image>")
    assert config["llava_config"]["image_token_index"] == image_id  # ids come from the tokenizer
    assert not list(tmp_path.glob(".*partial"))  # written atomically
    model = AutoModel.from_pretrained(str(out), trust_remote_code=True)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_llava_and_official_sam(tiny, sam_vit_b, tmp_path, dtype):
    from transformers import CLIPImageProcessor, LlavaProcessor

    model, processor = tiny
    model.llava.save_pretrained(tmp_path / "llava")
    LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}),
        tokenizer=processor.tokenizer,
        patch_size=16,
        image_token="<image>",
    ).save_pretrained(tmp_path / "llava")
    torch.save(sam_vit_b.state_dict(), tmp_path / "sam_vit_b.pth")

    converted, converted_processor = from_llava_and_sam(tmp_path / "llava", tmp_path / "sam_vit_b.pth", dtype)
    assert converted.config.sam_size == "vit_b" and converted.config.sam_encoder_dim == 768
    assert torch.equal(converted.llava.lm_head.weight, model.llava.lm_head.weight.to(dtype))
    assert torch.equal(
        converted.sam_image_encoder.patch_embed.proj.weight,
        sam_vit_b.image_encoder.patch_embed.proj.weight.to(dtype),
    )
    assert torch.equal(
        converted.sam_mask_decoder.iou_token.weight, sam_vit_b.mask_decoder.iou_token.weight.to(dtype)
    )
    assert not any(p.is_meta for p in converted.parameters())
    assert {p.dtype for p in converted.parameters()} == {dtype}
    # the new heads got PLUM's initialisation: FiLM and the pooler's output start at zero, the rest is random
    assert converted.feedback_pooler.film[0].proj.weight.abs().sum() == 0
    assert converted.feedback_pooler.attention.out_proj.weight.abs().sum() == 0
    assert converted.span_tagger.classifier[0].weight.std() > 0
    assert converted_processor.sam_image_size == 1024 and converted_processor.num_image_tokens == 64

    state = sam_vit_b.state_dict()
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(KeyError, match=r"SAM mask_decoder: missing keys \['iou_token.weight'\]"):
        from_llava_and_sam(tmp_path / "llava", tmp_path / "broken.pth")
    with pytest.raises(KeyError, match="not a SAM checkpoint"):
        sam_size_of({"foo": torch.zeros(1)})


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sam_vit_b):
    """A reference PLUM checkpoint (its key names and shapes), its tokenizer and the CLIP-224 folder."""
    root = tmp_path_factory.mktemp("reference")
    tokenizer = write_reference_tokenizer(root / "tokenizer")
    state = reference_state_dict(vocab=len(tokenizer), sam_state=sam_vit_b.state_dict())
    save_file({k: v.clone() for k, v in state.items()}, str(root / "plum_ckpt.safetensors"))
    write_clip_224(root / "clip")
    return root, state, tokenizer


def test_reference_checkpoint_imports_with_its_geometry_and_template(reference, tmp_path):
    root, state, tokenizer = reference
    main(
        [
            "--from-reference",
            str(root / "plum_ckpt.safetensors"),
            "--clip",
            str(root / "clip"),
            "--tokenizer",
            str(root / "tokenizer"),
            "--dtype",
            "float32",
            "--out",
            str(tmp_path / "plum-ref"),
        ]
    )
    model = AutoModel.from_pretrained(str(tmp_path / "plum-ref"), trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(str(tmp_path / "plum-ref"), trust_remote_code=True)
    config = model.config
    assert config.projector_type == "linear" and not config.feedback_add_no_mask
    assert config.text_config.hidden_size == 512 and config.text_config.num_hidden_layers == 2
    assert config.llava_config.image_seq_length == 256  # CLIP ViT-L/14 at 224 px
    vocab = len(processor.tokenizer)
    assert vocab == len(tokenizer) + 1 and config.text_config.vocab_size == vocab  # + <image>
    assert config.image_token_index == processor.tokenizer.convert_tokens_to_ids("<image>")

    weights = model.state_dict()
    expected = {
        "llava.model.multi_modal_projector.linear.weight": state["model.mm_projector.weight"],
        "span_tagger.classifier.2.weight": state["model.token_to_mask_fcs.0.2.weight"],
        "span_tagger.encoder.linear1.weight": state["bio_encoder.encoder.layers.0.linear1.weight"],
        "query_projector.layers.2.bias": state["model.text_hidden_fcs.0.2.bias"],
        "feedback_pooler.film.1.proj.weight": state["mask_pooler.mask_modulator.projections.1.weight"],
        "feedback_pooler.patch_queries": state["mask_pooler.queries"],
        "feedback_pooler.attention.out_proj.weight": state["mask_pooler.attn.out_proj.weight"],
        "sam_mask_decoder.iou_token.weight": state["model.visual_model.mask_decoder.iou_token.weight"],
        "llava.model.language_model.layers.1.mlp.down_proj.weight": state[
            "model.layers.1.mlp.down_proj.weight"
        ],
    }
    for key, tensor in expected.items():
        assert torch.equal(weights[key], tensor), key
    rows = state["lm_head.weight"].shape[0]
    assert torch.equal(weights["llava.lm_head.weight"][:rows], state["lm_head.weight"])
    assert torch.allclose(weights["llava.lm_head.weight"][rows], state["lm_head.weight"].mean(0), atol=1e-6)

    # the reference's llava_v1 template with <im_start> <image> x 256 <im_end>
    text = processor.prompt_text([("What visible parts does the dog in the image have?", None)])
    assert text == (
        REFERENCE_SYSTEM_PROMPT
        + " USER: <im_start>"
        + "<image>" * 256
        + "<im_end>\nWhat visible parts does the dog in the image have? ASSISTANT:"
    )
    from PIL import Image

    image = Image.new("RGB", (96, 64), (120, 30, 200))
    answer = "The dog in the image has the following visible parts: head and tail."
    batch = processor(
        images=[image],
        conversations=[[("What visible parts does the dog in the image have?", answer)]],
        parts=[[["head", "tail"]]],
    )
    batch.pop("spans")
    batch.pop("sam_pixel_values")
    with torch.no_grad():
        out = model(**batch, image_embeddings=torch.randn(1, 256, 64, 64), gt_masks=[torch.zeros(2, 64, 96)])
    assert torch.isfinite(out.loss) and out.pred_masks[0].shape == (2, 64, 96)


def test_reference_checkpoint_errors_name_the_key(reference, tmp_path, capsys):
    root, state, _ = reference
    broken = dict(state)
    del broken["model.token_to_mask_fcs.0.2.bias"]
    save_file({k: v.clone() for k, v in broken.items()}, str(tmp_path / "missing.safetensors"))
    common = [
        "--clip",
        str(root / "clip"),
        "--tokenizer",
        str(root / "tokenizer"),
        "--out",
        str(tmp_path / "x"),
    ]
    assert main(["--from-reference", str(tmp_path / "missing.safetensors"), *common]) == 2
    assert "missing keys ['span_tagger.classifier.2.bias']" in capsys.readouterr().err
    extra = {**state, "model.seg_token_fc.weight": torch.zeros(1)}
    save_file({k: v.clone() for k, v in extra.items()}, str(tmp_path / "extra.safetensors"))
    assert main(["--from-reference", str(tmp_path / "extra.safetensors"), *common]) == 2
    assert "unexpected key in the reference checkpoint: model.seg_token_fc.weight" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_missing_inputs_are_one_line_naming_them(tmp_path, capsys):
    """The LLaVA folder is checked first, then the SAM file: each a line on stderr, exit code 2, nothing written."""
    out = ["--out", str(tmp_path / "x")]
    assert main(["--llava", str(tmp_path / "no-llava"), "--sam", str(tmp_path / "no.pth"), *out]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no-llava: no such LLaVA folder" in error and "Traceback" not in error
    (tmp_path / "llava").mkdir()
    assert main(["--llava", str(tmp_path / "llava"), "--sam", str(tmp_path / "no.pth"), *out]) == 2
    assert "no.pth: no such SAM checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
