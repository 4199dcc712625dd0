"""The real-checkpoint path at the real geometry (shallow depth): an fp16 LLaVA-1.5 folder as llava-hf ships it plus an
official SAM `.pth` → `modeling_plum.convert` (default bf16, peak memory measured) → `AutoModel` in the default dtype
and in float32 → a training forward/backward on a real-length conversation (576 image tokens) → highlight-to-segment →
choice scoring → save → reload. Slow (a few minutes on 2 cores); part of `make test`."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from plum_training.testing.real_geometry import LLAVA_15, write_llava_15, write_sam

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
QUESTION = "What visible parts does the car in the image have?"
PARTS = ["door", "headlight", "license plate", "mirror", "wheel", "window"]
ANSWER = (
    "The car in the image has the following visible parts: " + ", ".join(PARTS[:-1]) + f", and {PARTS[-1]}."
)
GIB = 1024**3


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The two input files and the converted folder, with the converter's peak RSS (measured in its own process)."""
    root = tmp_path_factory.mktemp("real")
    write_llava_15(root / "llava")
    write_sam(root / "sam_vit_b.pth")
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from modeling_plum.convert import main
        from plum_training.testing.real_geometry import peak_rss_bytes
        main(["--llava", {str(root / "llava")!r}, "--sam", {str(root / "sam_vit_b.pth")!r},
              "--out", {str(root / "plum")!r}])
        print(json.dumps({{"peak_rss": peak_rss_bytes()}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss"]
    return root, peak


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def image():
    return Image.fromarray((np.random.default_rng(0).random((375, 500, 3)) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def processor(converted):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(converted[0] / "plum"), trust_remote_code=True)


@pytest.fixture(scope="module")
def model_fp32(converted):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(converted[0] / "plum"), trust_remote_code=True, dtype=torch.float32)


@pytest.fixture(scope="module")
def sam_embedding(model_fp32, processor, image):
    with torch.no_grad():
        return model_fp32.get_image_embeddings(processor.images([image])["sam_pixel_values"])


def test_conversion_writes_one_dtype_within_its_memory_budget(converted):
    root, peak = converted
    out = root / "plum"
    config = json.loads((out / "config.json").read_text())
    llava = config["llava_config"]
    assert (
        config["dtype"] == llava["dtype"] == llava["text_config"]["dtype"] == llava["vision_config"]["dtype"]
    )
    assert config["dtype"] == "bfloat16"
    dtypes, count = {}, 0
    for shard in out.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            for key in f.keys():
                tensor = f.get_slice(key)
                dtypes.setdefault(tensor.get_dtype(), []).append(key)
                count += int(np.prod(tensor.get_shape()))
    # one dtype, but SAM's 2 x 128 random Fourier projection (SAM builds its grid in float32)
    assert set(dtypes) == {"BF16", "F32"}
    assert dtypes["F32"] == ["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    inputs = folder_bytes(root / "llava") + (root / "sam_vit_b.pth").stat().st_size
    output = folder_bytes(out)
    assert output / count < 2.01  # bytes per parameter
    assert peak <= inputs + output + 1.5 * GIB, (peak / GIB, inputs / GIB, output / GIB)


def test_text_budget_leaves_out_the_576_image_tokens(processor):
    assert processor.num_image_tokens == LLAVA_15["image_size"] ** 2 // LLAVA_15["patch_size"] ** 2 == 576
    encoded = processor.encode_conversation([(QUESTION, ANSWER)], [PARTS])
    assert len(encoded["input_ids"]) > processor.max_length == 512  # 576 image tokens + the text
    assert processor.text_length(encoded["input_ids"]) == len(encoded["input_ids"]) - 576
    too_long = "The car in the image has the following visible parts: " + ", ".join(["door"] * 600) + "."
    with pytest.raises(
        ValueError, match=r"text tokens \(image tokens not counted\), longer than max_length=512"
    ):
        processor.encode_conversation([(QUESTION, too_long)])


def test_float32_training_step_on_a_real_conversation(model_fp32, processor, image, sam_embedding):
    model = model_fp32
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    batch = processor(images=[image], conversations=[[(QUESTION, ANSWER)]], parts=[[PARTS]])
    spans = batch.pop("spans")
    assert [len(s) for s in spans] == [len(PARTS)]
    batch.pop("sam_pixel_values")
    gt = torch.zeros(len(PARTS), 375, 500)
    gt[:, 100:200, 150:300] = 1
    model.train()
    out = model(**batch, image_embeddings=sam_embedding, gt_masks=[gt])
    for name in ("lm_loss", "span_loss", "mask_loss", "bce_loss"):
        assert torch.isfinite(getattr(out, name)), name
    out.loss.backward()
    for name, parameter in (
        ("span tagger", model.span_tagger.classifier[2].weight),
        ("query projector", model.query_projector.layers[2].weight),
        ("mask decoder", model.sam_mask_decoder.output_upscaling[0].weight),
        ("language model", model.llava.model.language_model.layers[0].self_attn.q_proj.weight),
    ):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    model.zero_grad()
    model.eval()
    assert out.pred_masks[0].shape == gt.shape and out.pred_masks[0].dtype == torch.float32


def test_default_dtype_highlight_and_choices_match_float32(
    converted, processor, image, sam_embedding, model_fp32
):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(converted[0] / "plum"), trust_remote_code=True)
    kept = {n for n, b in model.named_buffers() if b.dtype == torch.float32}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" in kept

    start = ANSWER.index("license plate")
    inputs = processor.highlight_inputs(image, [(QUESTION, ANSWER)], [(start, start + len("license plate"))])
    spans = inputs.pop("spans")
    results = {}
    for name, m in (("bf16", model), ("fp32", model_fp32)):
        out = m.segment_spans(
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["pixel_values"],  # the processor's float32
            spans,
            inputs["original_sizes"][0],
            inputs["resized_sizes"][0],
            image_embeddings=sam_embedding,  # float32, cast inside
        )
        assert out.masks.dtype == torch.bool and out.masks.shape == (1, 375, 500)
        assert out.mask_logits.dtype == torch.float32
        results[name] = out.mask_logits
    assert torch.allclose(results["bf16"], results["fp32"], atol=0.5)

    choices = [ANSWER, ANSWER.replace("door, ", ""), "It is a car.", ANSWER.replace("wheel", "wing"), "No."]
    prompt = processor.choice_inputs(image, [(QUESTION, None)], choices)
    scores = {
        name: m.score_choices(
            prompt["input_ids"], prompt["attention_mask"], prompt["pixel_values"], prompt["choice_ids"]
        )
        for name, m in (("bf16", model), ("fp32", model_fp32))
    }
    assert scores["bf16"].dtype == torch.float32 and scores["bf16"].shape == (5,)
    assert torch.allclose(scores["bf16"], scores["fp32"], atol=0.1)


def test_save_and_reload(model_fp32, processor, tmp_path):
    from transformers import AutoModel, AutoProcessor

    model_fp32.save_pretrained(tmp_path / "again")
    processor.save_pretrained(tmp_path / "again")
    reloaded = AutoModel.from_pretrained(str(tmp_path / "again"), trust_remote_code=True)
    assert {p.dtype for p in reloaded.parameters()} == {torch.float32}  # the saved dtype
    expected = model_fp32.state_dict()
    for key, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, expected[key]), key
    again = AutoProcessor.from_pretrained(str(tmp_path / "again"), trust_remote_code=True)
    assert again.prompt_text([(QUESTION, None)]) == processor.prompt_text([(QUESTION, None)])
