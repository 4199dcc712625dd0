"""PLUM model: presets, losses and gradients, span merging, feedback loop, KL teacher, save/load, overfitting,
choice scoring, conversion, bad input."""

import copy
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_plum import PlumConfig, PlumForConditionalGeneration, bio_to_spans
from modeling_plum.convert import build_tiny
from modeling_plum.losses_plum import adapter_layers, adapters_disabled
from modeling_plum.scoring_plum import full_forward_log_likelihoods
from modeling_plum.segmentation_plum import decode_one_prompt_per_image
from partonomy_dataset import masks as mask_rle
from partonomy_dataset.sources import toy

QUESTION = "What visible parts does the car in the image have?"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_tiny()


@pytest.fixture(scope="module")
def toy_car(tmp_path_factory):
    instances = toy.generate(tmp_path_factory.mktemp("toy"), 6, seed=1)
    car = next(i for i in instances if i.object == "car")
    parts = [p for p in car.parts if mask_rle.decode(car.parts[p]).sum() >= 150]  # what 200 steps can overfit
    answer = (
        "The car in the image has the following visible parts: "
        + ", ".join(parts[:-1])
        + f", and {parts[-1]}."
    )
    gt = torch.stack([torch.from_numpy(mask_rle.decode(car.parts[p])).float() for p in parts])
    return Image.open(car.image_path).convert("RGB"), answer, parts, gt


def batch_for(processor, image, answer, parts):
    batch = processor(images=[image], conversations=[[(QUESTION, answer)]], parts=[[parts]])
    spans = batch.pop("spans")
    return batch, spans


# ------------------------------------------------------------------------------------------- config


def test_plum_13b_has_the_right_size_on_the_meta_device():
    from transformers import LlavaForConditionalGeneration

    config = PlumConfig.from_preset("plum-13b")
    with torch.device("meta"):
        model = PlumForConditionalGeneration(config)
        llava = LlavaForConditionalGeneration(config.llava_config)

    def count(module):
        return sum(p.numel() for p in module.parameters())

    sam = count(model.sam_image_encoder) + count(model.sam_prompt_encoder) + count(model.sam_mask_decoder)
    heads = count(model.span_tagger) + count(model.query_projector) + count(model.feedback_pooler)
    assert count(model.llava) == count(llava) == 13_350_849_536  # LLaVA-LLaMA-2-13B with CLIP ViT-L/14-336
    assert sam == 641_090_608  # SAM ViT-H: 641.09 M
    assert count(model) == count(llava) + sam + heads
    assert config.sam_encoder_dim == 1280 and config.llava_config.image_seq_length == 576


def test_presets_and_bad_values():
    assert PlumConfig.from_preset("plum-7b").text_config.hidden_size == 4096
    reference = PlumConfig.from_preset("plum-13b-reference")
    with torch.device("meta"):
        model = PlumForConditionalGeneration(reference)
    projector = model.llava.model.multi_modal_projector
    assert [tuple(p.shape) for p in projector.parameters()] == [(5120, 1024), (5120,)]  # one linear layer
    assert reference.llava_config.image_seq_length == 256 and reference.text_config.vocab_size == 32003
    with pytest.raises(ValueError, match="projector_type must be one of"):
        PlumConfig(projector_type="qformer")
    with pytest.raises(ValueError, match="unknown PLUM preset 'plum-70b'"):
        PlumConfig.from_preset("plum-70b")
    with pytest.raises(ValueError, match="sam_size must be one of"):
        PlumConfig(sam_size="vit_x")


# ------------------------------------------------------------------------------------------- spans


@pytest.mark.parametrize(
    "tags, spans",
    [
        ([0, 1, 2, 2, 0, 1, 0], [(1, 4), (5, 6)]),  # B→I chains
        ([0, 2, 2, 0, 1], [(1, 3), (4, 5)]),  # a stray I opens a span; a span at the end
        ([1, 1, 2, 0], [(0, 1), (1, 3)]),  # two B in a row are two spans
        ([-100, 2, 1, 2, -100, 2], [(1, 2), (2, 4), (5, 6)]),  # ignored positions close spans
        ([0, 0], []),
    ],
)
def test_bio_to_spans(tags, spans):
    assert bio_to_spans(tags) == spans


def test_bio_labels_align_with_part_names(tiny):
    _, processor = tiny
    answer = "The car in the image has the following visible parts: door, license plate, headlight, and head."
    encoded = processor.encode_conversation(
        [(QUESTION, answer)], [["door", "license plate", "headlight", "head"]]
    )
    tokens, offsets, text = encoded["input_ids"], encoded["offsets"], encoded["text"]
    decoded = [text[offsets[s][0] : offsets[e - 1][1]].strip(" ,.") for s, e in encoded["spans"]]
    assert decoded == ["door", "license plate", "headlight", "head"]
    assert bio_to_spans(encoded["span_labels"]) == encoded["spans"]
    labels = encoded["labels"]
    first_answer_token = next(i for i, label in enumerate(labels) if label != -100)
    assert text[offsets[first_answer_token][0] :].lstrip().startswith("The car")
    assert labels[-1] == tokens[-1] == processor.tokenizer.eos_token_id  # the answer's </s> is learned
    assert all(label == -100 for label in encoded["span_labels"][:first_answer_token])


# ------------------------------------------------------------------------------------------- forward


def test_forward_shapes_losses_and_gradients(tiny, toy_car):
    model, processor = copy.deepcopy(tiny[0]), tiny[1]
    image, answer, parts, gt = toy_car
    batch, spans = batch_for(processor, image, answer, parts)
    out = model(**batch, gt_masks=[gt])
    assert out.logits.shape[:2] == batch["input_ids"].shape and out.span_logits.shape[-1] == 3
    assert out.spans == spans and len(spans[0]) == len(parts)
    assert out.pred_masks[0].shape == gt.shape
    for name in ("lm_loss", "span_loss", "kl_loss", "mask_loss", "bce_loss", "loss"):
        assert torch.isfinite(getattr(out, name)), name
    assert out.kl_loss == 0  # no adapters, no frozen snapshot: no teacher
    components = {
        "lm_loss": model.llava.lm_head.weight,
        "span_loss": model.span_tagger.classifier[2].weight,
        "mask_loss": model.sam_mask_decoder.output_upscaling[0].weight,
        "bce_loss": model.query_projector.layers[2].weight,
    }
    for name, parameter in components.items():
        model.zero_grad()
        getattr(model(**batch, gt_masks=[gt]), name).backward()
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    model.zero_grad()
    model(**batch, gt_masks=[gt]).mask_loss.backward()
    # The feedback loop learns: its output projection first (it starts at zero), then everything before it.
    assert model.feedback_pooler.attention.out_proj.weight.grad.abs().sum() > 0
    torch.nn.init.normal_(model.feedback_pooler.attention.out_proj.weight, std=0.1)
    model.zero_grad()
    model(**batch, gt_masks=[gt]).mask_loss.backward()
    assert model.feedback_pooler.film[0].proj.weight.grad.abs().sum() > 0


def test_mask_count_mismatch_is_an_error(tiny, toy_car):
    model, processor = tiny
    image, answer, parts, gt = toy_car
    batch, _ = batch_for(processor, image, answer, parts)
    with pytest.raises(ValueError, match=r"sample 0: \d+ spans were segmented .* but 1 ground-truth masks"):
        model(**batch, gt_masks=[gt[:1]])


def test_feedback_loop(tiny):
    model = copy.deepcopy(tiny[0])
    assert model.feedback_pooler.attention.out_proj.weight.abs().sum() == 0  # starts by passing nothing on
    torch.manual_seed(1)
    torch.nn.init.normal_(model.feedback_pooler.attention.out_proj.weight, std=0.5)  # as after some training
    embedding = torch.randn(1, model.config.sam_prompt_dim, 16, 16)
    queries = torch.randn(3, model.config.sam_prompt_dim)
    size = ((90, 100), (115, 128))
    with torch.no_grad():
        masks, _ = model.decode_masks(embedding, queries, *size)
        changed = queries.clone()
        changed[0] += 1.0  # a different first span: a different first mask
        masks_changed, _ = model.decode_masks(embedding, changed, *size)
        pooler, model.feedback_pooler = model.feedback_pooler, None
        try:
            plain, _ = model.decode_masks(embedding, queries, *size)
            plain_changed, _ = model.decode_masks(embedding, changed, *size)
        finally:
            model.feedback_pooler = pooler
    assert torch.equal(masks[0], plain[0])  # span 1 is the no-feedback path
    assert not torch.allclose(masks[1], masks_changed[1])  # span 2 sees span 1's mask
    assert torch.equal(plain[1], plain_changed[1])  # without feedback span 2 does not


def test_kl_teacher_is_the_model_without_adapters(tiny, toy_car):
    from peft import LoraConfig, get_peft_model

    model = copy.deepcopy(tiny[0])
    image, answer, parts, gt = toy_car
    batch, _ = batch_for(tiny[1], image, answer, parts)
    before = sum(p.numel() for p in model.parameters())
    lora = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=r".*\.language_model\..*\.(q_proj|v_proj)"
    )
    peft_model = get_peft_model(model, lora)
    adapted = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert adapted and all(".language_model." in n and ("q_proj" in n or "v_proj" in n) for n in adapted)
    assert (
        sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" not in n) == before
    )  # no teacher copy
    out = peft_model(**batch, gt_masks=[gt])
    assert out.kl_loss == 0  # LoRA B starts at zero: student == teacher
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.5)
    out.loss.backward()
    optimizer.step()
    assert peft_model(**batch, gt_masks=[gt]).kl_loss > 0
    with adapters_disabled(model.llava):
        pass
    assert all(not layer.disable_adapters for layer in adapter_layers(model.llava))  # switched back on


def test_frozen_snapshot_teacher(tiny, toy_car):
    model = PlumForConditionalGeneration(
        PlumConfig(**{**tiny[0].config.to_dict(), "kl_frozen_snapshot": True})
    )
    model.load_state_dict(tiny[0].state_dict(), strict=False)
    model.sync_kl_teacher()
    image, answer, parts, gt = toy_car
    batch, _ = batch_for(tiny[1], image, answer, parts)
    assert model(**batch, gt_masks=[gt]).kl_loss < 1e-10
    with torch.no_grad():
        model.llava.model.language_model.norm.weight.mul_(1.5)
    assert model(**batch, gt_masks=[gt]).kl_loss > 0


def test_overfits_one_toy_example(tiny, toy_car):
    model, processor = copy.deepcopy(tiny[0]), tiny[1]
    image, answer, parts, gt = toy_car
    batch, _ = batch_for(processor, image, answer, parts)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    for _ in range(200):
        out = model(**batch, gt_masks=[gt])
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    predicted = out.pred_masks[0].detach() > 0
    truth = gt > 0
    iou = ((predicted & truth).sum((1, 2)) / (predicted | truth).sum((1, 2))).mean()
    assert iou >= 0.9


def test_gradient_checkpointing_and_bf16(tiny, toy_car):
    model, processor = copy.deepcopy(tiny[0]), tiny[1]
    image, answer, parts, gt = toy_car
    batch, _ = batch_for(processor, image, answer, parts)
    model.eval()  # no dropout, so that the two passes compare
    reference = model(**batch, gt_masks=[gt]).loss
    model.activation_checkpointing_enable()
    model.train()
    out = model(**batch, gt_masks=[gt])
    out.loss.backward()
    assert model.sam_image_encoder.patch_embed.proj.weight.grad is not None
    model.eval()
    assert torch.allclose(model(**batch, gt_masks=[gt]).loss, reference.detach(), atol=1e-4)
    model = model.to(torch.bfloat16)
    batch = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in batch.items()}
    assert torch.isfinite(model(**batch, gt_masks=[gt.bfloat16()]).loss)


# ------------------------------------------------------------------------------------------- inference


def test_score_choices_reuses_the_prefix(tiny, toy_car):
    model, processor = tiny
    image = toy_car[0]
    choices = [
        "The car has a door.",
        "The car has a door and a wheel.",
        "It is a dog.",
        "wheel",
        "It is a car.",
    ]
    inputs = processor.choice_inputs(image, [(QUESTION, None)], choices)
    shared = model.score_choices(
        inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"], inputs["choice_ids"]
    )
    prefix = {k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    full = full_forward_log_likelihoods(model.llava, prefix, inputs["choice_ids"])
    assert shared.shape == (5,) and torch.allclose(shared, full, atol=1e-4)


def test_image_embeddings_are_computed_once(tiny, toy_car, monkeypatch):
    model, processor = tiny
    image, answer, parts, _ = toy_car
    calls = []
    original = model.get_image_embeddings
    monkeypatch.setattr(model, "get_image_embeddings", lambda x: calls.append(1) or original(x))
    batch, spans = batch_for(processor, image, answer, parts)
    embeddings = model.get_image_embeddings(batch["sam_pixel_values"])
    for _ in range(5):  # five questions about the same image
        out = model.segment_spans(
            batch["input_ids"],
            batch["attention_mask"],
            batch["pixel_values"],
            spans[0],
            batch["original_sizes"][0],
            batch["resized_sizes"][0],
            image_embeddings=embeddings,
        )
        assert out.masks.shape == (len(parts), *image.size[::-1])
    assert len(calls) == 1


def test_highlight_to_segment_and_answer_and_segment(tiny, toy_car):
    model, processor = tiny
    image, answer, parts, _ = toy_car
    start = answer.index(parts[0])
    inputs = processor.highlight_inputs(image, [(QUESTION, answer)], [(start, start + len(parts[0]))])
    spans = inputs.pop("spans")
    out = model.segment_spans(
        inputs["input_ids"],
        inputs["attention_mask"],
        inputs["pixel_values"],
        spans,
        inputs["original_sizes"][0],
        inputs["resized_sizes"][0],
        sam_pixel_values=inputs["sam_pixel_values"],
    )
    assert out.masks.shape == (1, image.size[1], image.size[0]) and out.masks.dtype == torch.bool
    for bad in ([(5, 5)], [(0, len(answer) + 3)], []):
        with pytest.raises(ValueError, match="span|at least one"):
            processor.highlight_inputs(image, [(QUESTION, answer)], bad)
    with pytest.raises(ValueError, match="outside the"):
        model.segment_spans(
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["pixel_values"],
            [(0, 10**6)],
            inputs["original_sizes"][0],
            inputs["resized_sizes"][0],
            sam_pixel_values=inputs["sam_pixel_values"],
        )
    prompt = processor.choice_inputs(image, [(QUESTION, None)], ["x"])
    result = model.answer_and_segment(
        prompt["input_ids"],
        prompt["attention_mask"],
        prompt["pixel_values"],
        prompt["original_sizes"][0],
        prompt["resized_sizes"][0],
        sam_pixel_values=prompt["sam_pixel_values"],
        max_new_tokens=8,
        processor=processor,
    )
    assert result.sequences.shape[1] > prompt["input_ids"].shape[1] and isinstance(result.text, str)
    assert result.masks.shape[0] == len(result.spans) == len(result.char_spans)


# ------------------------------------------------------------------------------------------- save / load


def test_save_load_round_trip_in_a_fresh_process(tiny, toy_car, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path / "plum")
    processor.save_pretrained(tmp_path / "plum")
    assert (tmp_path / "plum" / "model.safetensors").exists()
    image, answer, parts, gt = toy_car
    image.save(tmp_path / "image.png")
    batch, _ = batch_for(processor, image, answer, parts)
    was_training = model.training
    model.eval()  # from_pretrained returns an eval-mode model (no dropout in the span tagger)
    with torch.no_grad():
        expected = model(**batch, gt_masks=[gt])
    model.train(was_training)
    torch.save({"loss": expected.loss, "masks": expected.pred_masks[0], "gt": gt}, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import importlib.abc, sys, torch
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("modeling_plum", "partonomy_dataset", "metrics"):
                    raise ImportError("the repository must not be importable here: " + name)
        sys.meta_path.insert(0, Block())
        torch.set_num_threads({torch.get_num_threads()})  # same reduction order as the saving process
        from PIL import Image
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained({str(tmp_path / "plum")!r}, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained({str(tmp_path / "plum")!r}, trust_remote_code=True)
        batch = processor(images=[Image.open({str(tmp_path / "image.png")!r})],
                          conversations=[[({QUESTION!r}, {answer!r})]], parts=[[{parts!r}]])
        batch.pop("spans")
        expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
        with torch.no_grad():
            out = model(**batch, gt_masks=[expected["gt"]])
        torch.testing.assert_close(out.pred_masks[0], expected["masks"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.loss, expected["loss"], rtol=1e-5, atol=1e-6)
        print("module", type(model).__module__)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "transformers_modules" in result.stdout


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_image_modes(tiny, mode):
    _, processor = tiny
    array = (np.random.default_rng(0).random((40, 50)) * 255).astype(np.uint8)
    image = (
        Image.fromarray(array).convert(mode)
        if mode != "I;16"
        else Image.fromarray(array.astype(np.uint16) * 256)
    )
    inputs = processor.images([image])
    assert inputs["sam_pixel_values"].shape == (1, 3, 128, 128)
    assert inputs["original_sizes"].tolist() == [[40, 50]] and inputs["resized_sizes"].tolist() == [
        [102, 128]
    ]
    if mode == "I;16":  # 16-bit values are scaled, not clipped to white
        assert inputs["sam_pixel_values"][0, :, :102, :128].std() > 0.5


def test_bad_images_and_long_text(tiny):
    _, processor = tiny
    with pytest.raises(ValueError, match="image 0 is 10x12 px; PLUM needs at least 16"):
        processor.images([Image.new("RGB", (10, 12))])
    with pytest.raises(ValueError, match="image 0 is 8200x20 px; resize it below 8192"):
        processor.images([Image.new("L", (8200, 20))])
    with pytest.raises(ValueError, match="image 0: expected a PIL image"):
        processor.images(["not an image"])
    long_answer = "The car in the image has the following visible parts: " + ", ".join(["door"] * 700) + "."
    with pytest.raises(ValueError, match="longer than max_length"):
        processor.encode_conversation([(QUESTION, long_answer)])
    with pytest.raises(ValueError, match="part 'wing' does not occur in the answer"):
        processor.encode_conversation([(QUESTION, "The car has a door.")], [["wing"]])


def test_batched_decoding_matches_sams_own_decoder(tiny):
    model, _ = tiny
    torch.manual_seed(2)
    dim = model.config.sam_prompt_dim
    embeddings, sparse, dense = (
        torch.randn(3, dim, 16, 16),
        torch.randn(3, 1, dim),
        torch.randn(3, dim, 16, 16),
    )
    dense_pe = model.sam_prompt_encoder.get_dense_pe()
    with torch.no_grad():
        batched = decode_one_prompt_per_image(model.sam_mask_decoder, embeddings, dense_pe, sparse, dense)
        for b in range(3):
            single, _ = model.sam_mask_decoder(
                image_embeddings=embeddings[b : b + 1],
                image_pe=dense_pe,
                sparse_prompt_embeddings=sparse[b : b + 1],
                dense_prompt_embeddings=dense[b : b + 1],
                multimask_output=False,
            )
            assert torch.allclose(batched[b], single[0], atol=1e-5)
        # and a batch of images decodes as each image alone
        queries = [torch.randn(n, dim) for n in (3, 1, 2)]
        sizes = [(60, 80), (128, 128), (100, 50)]
        resized = [(96, 128), (128, 128), (128, 64)]
        together, _ = model.decode_masks_batch(embeddings, queries, sizes, resized)
        for b in range(3):
            alone, _ = model.decode_masks(embeddings[b : b + 1], queries[b], sizes[b], resized[b])
            assert torch.allclose(together[b], alone, atol=1e-5)


# ------------------------------------------------------------------------------------------- loaded = built, dtypes


def test_a_loaded_model_equals_one_built_from_its_config_and_weights(tiny, toy_car, tmp_path):
    """`from_pretrained` builds on the meta device: anything only the constructor sets (a non-persistent buffer)
    would be garbage after loading. The loaded model must compute exactly what the built one computes."""
    from transformers import AutoModel

    model, processor = tiny
    model.save_pretrained(tmp_path / "plum")
    loaded = AutoModel.from_pretrained(str(tmp_path / "plum"), trust_remote_code=True)
    built = PlumForConditionalGeneration(PlumConfig.from_pretrained(str(tmp_path / "plum")))
    built.load_state_dict(model.state_dict(), strict=True)  # the weights that were saved
    image, answer, parts, gt = toy_car
    batch, _ = batch_for(processor, image, answer, parts)
    for mode in ("eval", "train"):
        losses = []
        for m in (loaded, built):
            getattr(m, mode)()
            torch.manual_seed(0)  # the same dropout masks
            out = m(**batch, gt_masks=[gt])
            losses.append(
                {k: float(getattr(out, k).detach()) for k in ("loss", "span_loss", "mask_loss", "lm_loss")}
            )
        assert losses[0] == losses[1], mode
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, built.state_dict()[key]), key
    moved = copy.deepcopy(loaded).to(torch.float64).to(torch.float32)  # `.to()` keeps every derived value
    moved.eval()
    loaded.eval()
    assert torch.equal(moved(**batch, gt_masks=[gt]).loss, loaded(**batch, gt_masks=[gt]).loss)


@pytest.fixture(scope="module")
def tiny_folder(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "plum"
    tiny[0].save_pretrained(folder)
    tiny[1].save_pretrained(folder)
    return folder


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_public_method_takes_float32_inputs_in_any_dtype(tiny_folder, toy_car, dtype):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(str(tiny_folder), trust_remote_code=True, dtype=dtype).eval()
    processor = AutoProcessor.from_pretrained(str(tiny_folder), trust_remote_code=True)
    floats = {n: b.dtype for n, b in model.named_buffers() if b.is_floating_point()}
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert {n for n, d in floats.items() if d != dtype} == {
        "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",  # SAM's grid is float32
        "llava.model.language_model.rotary_emb.inv_freq",  # transformers keeps RoPE frequencies in float32
        "llava.model.language_model.rotary_emb.original_inv_freq",
    }
    image, answer, parts, gt = toy_car
    batch, spans = batch_for(processor, image, answer, parts)
    assert batch["pixel_values"].dtype == batch["sam_pixel_values"].dtype == torch.float32
    with torch.no_grad():
        out = model(**batch, gt_masks=[gt])
        assert torch.isfinite(out.loss) and out.loss.dtype == torch.float32
        assert out.pred_masks[0].dtype == torch.float32
        embeddings = model.get_image_embeddings(batch["sam_pixel_values"])
    assert embeddings.dtype == dtype
    segmented = model.segment_spans(
        batch["input_ids"],
        batch["attention_mask"],
        batch["pixel_values"],
        spans[0],
        batch["original_sizes"][0],
        batch["resized_sizes"][0],
        sam_pixel_values=batch["sam_pixel_values"],
    )
    assert segmented.masks.dtype == torch.bool and segmented.mask_logits.dtype == torch.float32
    prompt = processor.choice_inputs(image, [(QUESTION, None)], ["It is a car.", answer])
    scores = model.score_choices(
        prompt["input_ids"], prompt["attention_mask"], prompt["pixel_values"], prompt["choice_ids"]
    )
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    answered = model.answer_and_segment(
        prompt["input_ids"],
        prompt["attention_mask"],
        prompt["pixel_values"],
        prompt["original_sizes"][0],
        prompt["resized_sizes"][0],
        sam_pixel_values=prompt["sam_pixel_values"],
        max_new_tokens=4,
    )
    assert answered.masks.dtype == torch.bool and answered.mask_logits.dtype == torch.float32


def test_feedback_starts_from_sams_no_mask_prompt(tiny):
    """With `feedback_add_no_mask` (the default for pretrained SAM), spans k >= 1 first see exactly the no-mask prompt
    SAM was trained with: the pooled term starts at zero."""
    config = PlumConfig(**{**tiny[0].config.to_dict(), "feedback_add_no_mask": True})
    torch.manual_seed(0)
    model = PlumForConditionalGeneration(config).eval()
    embedding = torch.randn(1, config.sam_prompt_dim, 16, 16)
    queries = torch.randn(3, config.sam_prompt_dim)
    with torch.no_grad():
        with_feedback, _ = model.decode_masks(embedding, queries, (100, 120), (107, 128))
        pooler, model.feedback_pooler = model.feedback_pooler, None
        without, _ = model.decode_masks(embedding, queries, (100, 120), (107, 128))
        model.feedback_pooler = pooler
    assert torch.equal(with_feedback, without)
    assert PlumConfig().feedback_add_no_mask and not tiny[0].config.feedback_add_no_mask


# ------------------------------------------------------------------------------------------- [SEG] token (ablation)


def test_seg_token_variant_is_a_real_alternative(toy_car):
    """LISA's way, kept for the ablation: the processor writes `[SEG]` after each part name, each `[SEG]` is a
    one-token span whose hidden state becomes the mask query; the tagger is not used; it learns like the tagger."""
    torch.manual_seed(0)
    model, processor = build_tiny(segmentation_query="seg_token")
    image, answer, parts, gt = toy_car
    seg_id = model.config.seg_token_index
    assert processor.tokenizer.convert_ids_to_tokens(seg_id) == processor.seg_token == "[SEG]"
    batch, spans = batch_for(processor, image, answer, parts)
    ids = batch["input_ids"][0].tolist()
    assert [ids[s] for s, e in spans[0]] == [seg_id] * len(parts) and all(e - s == 1 for s, e in spans[0])
    decoded = processor.tokenizer.decode(ids, skip_special_tokens=False)
    assert f"{parts[0]} [SEG]" in decoded.replace("  ", " ")
    out = model(**batch, gt_masks=[gt])
    assert out.span_loss is None and out.span_logits is None and torch.isfinite(out.loss)
    out.mask_loss.backward()
    assert model.query_projector.layers[2].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.span_tagger.parameters())
    with torch.no_grad():  # at inference the [SEG] tokens of the text give the spans
        unlabeled = {k: v for k, v in batch.items() if k not in ("labels", "span_labels")}
        assert model(**unlabeled).spans == spans
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    for _ in range(200):
        out = model(**batch, gt_masks=[gt])
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    predicted, truth = out.pred_masks[0].detach() > 0, gt > 0
    assert ((predicted & truth).sum((1, 2)) / (predicted | truth).sum((1, 2))).mean() >= 0.9
    with pytest.raises(ValueError, match="needs seg_token_index"):
        PlumConfig(segmentation_query="seg_token")
