"""Stage 0 of the tiny PLUM: the pretraining a real PLUM inherits, made for the toy.

A real PLUM starts from LLaVA-1.5 (a CLIP vision tower pretrained contrastively on image-text pairs, then a
projector and LLaMA trained to talk about images with CLIP frozen) and from SAM (an image encoder and mask decoder
pretrained on promptable segmentation). Stage 0 does the same at the tiny preset's sizes, in the libraries' own
classes, on a pretraining corpus of freshly drawn toy images (`toy.draw` with another seed than the benchmark's, so
the benchmark's images stay unseen):

1. CLIP (`transformers.CLIPModel`): contrastive image-caption pretraining on CLIP's own prompt ("a photo of a car"); the
   object's name alone, because captions listing the visible parts as well taught the tower less about the object (a
   linear probe of its features named held-out objects 31-33 % right after the same steps, against 41-46 %, when the
   tower read 8 x 8 patches at 64 px).
2. LLaVA (`LlavaForConditionalGeneration` + `LlavaProcessor`), CLIP frozen: the projector and LLaMA learn to name the
   object, list its visible parts and say which object a part belongs to. Saved as an ordinary LLaVA-HF folder.
3. SAM (`segment_anything`'s image encoder, prompt encoder and mask decoder): box-prompted part segmentation. Saved as
   a segment_anything state dict (`sam_tiny.pth`, the layout of `sam_vit_h_4b8939.pth`).

`python -m modeling_plum.convert --llava DIR --sam sam_tiny.pth` then makes the PLUM that stage 1 fine-tunes, exactly as
it converts llava-hf/llava-1.5-13b-hf and the official SAM. Jobs 1-2 and job 3 run side by side, one thread each.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from modeling_plum.configuration_plum import PlumConfig
from modeling_plum.convert import (
    IMAGE_TOKEN,
    fit_to_tokenizer,
    square_clip_image_processor,
    train_tiny_tokenizer,
)
from modeling_plum.losses_plum import dice_loss, sigmoid_bce_loss
from modeling_plum.processing_plum import SAM_PIXEL_MEAN, SAM_PIXEL_STD, postprocess_masks
from modeling_plum.segmentation_plum import build_sam, decode_one_prompt_per_image
from partonomy_dataset import templates
from partonomy_dataset.sources import toy

logger = logging.getLogger(__name__)

CORPUS_SEED = 1042  # the benchmark's toy images are drawn with seed 42: the corpus never contains them
HELD_OUT_SEED = 2042  # the images stage 0 checks its CLIP and SAM on: in neither its corpus nor the benchmark
BOX_JITTER = 0.1  # SAM's box-prompt noise in pretraining: each side moves by up to this share of the box size
PART_OWNER_QUESTION = "Which object in the image has {part}?"
# LLaVA-1.5's conversation format, which PlumProcessor writes too: "USER: <image>\n{q} ASSISTANT: {a}</s>"
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT:{% for item in message['content'] %}{% if item['type'] == 'text' %} {{ item['text'] }}"
    "{% endif %}{% endfor %}</s>{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


@dataclass
class Stage0Settings:
    """Sizes and budgets of stage 0 (the defaults take about 7 minutes on 2 CPU cores)."""

    corpus_images: int = 5000
    clip_steps: int = 2100
    clip_batch_size: int = 32
    clip_learning_rate: float = 1e-3
    clip_eval_images: int = 300
    llava_steps: int = 400
    llava_batch_size: int = 32
    llava_learning_rate: float = 1e-3
    sam_steps: int = 850
    sam_batch_size: int = 8
    sam_parts_per_image: int | None = None  # None: every visible part of each image
    sam_learning_rate: float = 2e-3
    sam_eval_images: int = 100
    seed: int = 0

    @classmethod
    def quick(cls) -> Stage0Settings:
        """A few steps of everything on a small corpus: checks that stage 0 runs (the tests, `--quick` modes)."""
        small = {
            "corpus_images": 40,
            "clip_steps": 2,
            "clip_batch_size": 8,
            "llava_steps": 2,
            "llava_batch_size": 4,
        }
        return cls(**small, sam_steps=2, sam_batch_size=2, sam_eval_images=4, clip_eval_images=4)

    def fingerprint(self) -> str:
        """A short hash of the settings, the tiny preset's sizes and the code that draws and trains: equal inputs make
        an equal stage 0."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode())
        digest.update(PlumConfig.from_preset("tiny").to_json_string().encode())
        digest.update(Path(toy.__file__).read_bytes())
        digest.update(Path(__file__).read_bytes())
        return digest.hexdigest()[:12]


# ---------------------------------------------------------------------------------------------------- corpus


def draw_corpus(num_images: int, seed: int = CORPUS_SEED) -> list[tuple[str, np.ndarray, dict]]:
    """(object, RGB image as the dataset stores it (JPEG), part masks) for `num_images` fresh toy images."""
    import io

    from PIL import Image

    samples = []
    for index in tqdm(range(num_images), desc="drawing the stage-0 corpus", leave=False):
        name, image, masks = toy.draw(index, seed)
        stored = np.array(Image.open(io.BytesIO(toy.jpeg(image))).convert("RGB"))
        samples.append((name, stored, masks))
    return samples


def corpus_texts(samples) -> list[str]:
    """What the tiny tokenizer is trained on: every question and answer stage 0 and PARTONOMY ask about the toy."""
    texts = []
    for name, _, masks in samples[:2000]:
        parts = sorted(masks)
        texts += [templates.parts_question(t, name, name) for t in templates.QUESTION_TYPES]
        texts += [templates.parts_answer(t, name, parts, name) for t in templates.QUESTION_TYPES]
        texts += [
            caption(name),
            templates.object_answer(name),
            PART_OWNER_QUESTION.format(part=parts[0]),
        ]
    return texts + [templates.OBJECT_QUESTION]


def caption(name: str) -> str:
    """CLIP's caption of a corpus image."""
    return f"a photo of {templates.with_article(name)}"


# How often stage 0's LLaVA steps ask each task: naming the object, its visible parts (of "the car", of "the object"),
# and which object a part belongs to. Equal shares: giving naming half the steps named more held-out objects after
# stage 0 (51 % against 42 %) but read the parts worse (identification A before stage 1 38 % against 50 %; one
# `make demo` run each).
TASK_WEIGHTS = (1 / 4, 1 / 4, 1 / 4, 1 / 4)


def tasks(name: str, parts: list[str], rng) -> tuple[str, str]:
    """One of stage 0's image-text tasks for an image (drawn with `TASK_WEIGHTS`): name the object, list its visible
    parts (of "the car" or of "the object"), or say which object a visible part belongs to."""
    task = rng.choice(len(TASK_WEIGHTS), p=TASK_WEIGHTS)
    if task == 0:
        return templates.OBJECT_QUESTION, templates.object_answer(name)
    if task == 1:
        return templates.parts_question("identification", name), templates.parts_answer(
            "identification", name, parts
        )
    if task == 2:
        unnamed = templates.UNNAMED_OBJECT
        return templates.parts_question("part2whole", unnamed), templates.parts_answer(
            "part2whole", unnamed, parts
        )
    part = parts[rng.integers(len(parts))]
    return PART_OWNER_QUESTION.format(part=templates.with_article(part)), templates.object_answer(name)


# ---------------------------------------------------------------------------------------------------- CLIP


def clip_pixels(image_processor, samples, chunk: int = 500) -> torch.Tensor:
    """CLIP inputs of every corpus image, `(n, 3, S, S)`, made by the CLIP image processor."""
    return torch.cat(
        [
            image_processor(images=[s[1] for s in samples[i : i + chunk]], return_tensors="pt")[
                "pixel_values"
            ]
            for i in range(0, len(samples), chunk)
        ]
    )


def pretrain_clip(samples, pixels, tokenizer, vision_config, settings: Stage0Settings):
    """A CLIP (vision tower at the tiny preset's size, a small text tower) trained contrastively on the corpus."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig

    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision_config.to_dict(), projection_dim=64)
    model = CLIPModel(config).train()
    optimizer, scheduler = _optimizer(model.parameters(), settings.clip_learning_rate, settings.clip_steps)
    rng = np.random.default_rng(settings.seed)
    for _ in tqdm(range(settings.clip_steps), desc="stage 0: CLIP", leave=False):
        picked = rng.choice(len(samples), settings.clip_batch_size, replace=False)
        text_inputs = clip_text_inputs(tokenizer, [samples[i][0] for i in picked])
        loss = model(**text_inputs, pixel_values=pixels[picked], return_loss=True).loss
        _step(loss, model.parameters(), optimizer, scheduler)
    return model.eval()


def clip_text_inputs(tokenizer, names: list[str]) -> dict:
    """CLIP's text-tower inputs for the captions of `names`: each caption ends in `</s>`, padded to the longest."""
    captions = [caption(name) + tokenizer.eos_token for name in names]
    return tokenizer(captions, add_special_tokens=False, padding=True, return_tensors="pt")


def clip_zero_shot_naming(clip, tokenizer, image_processor, samples) -> dict:
    """How well the pretrained CLIP names the object of held-out images zero-shot: each image scored against the
    caption of every toy object, right when the highest score is its own object's. Returns that accuracy, chance (one
    in the number of objects) and the number of images."""
    names = sorted(toy.OBJECTS)
    text_inputs = clip_text_inputs(tokenizer, names)
    with torch.no_grad():
        logits = clip(**text_inputs, pixel_values=clip_pixels(image_processor, samples)).logits_per_image
    truth = torch.tensor([names.index(sample[0]) for sample in samples])
    return {
        "clip_zero_shot_naming": float((logits.argmax(-1) == truth).float().mean()),
        "clip_chance_naming": 1 / len(names),
        "clip_eval_images": len(samples),
    }


def _optimizer(parameters, learning_rate: float, steps: int, warmup: int = 100):
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, betas=(0.9, 0.95), weight_decay=0.0)
    return optimizer, get_linear_schedule_with_warmup(optimizer, min(warmup, steps // 5), steps)


def _step(loss, parameters, optimizer, scheduler):
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


# ---------------------------------------------------------------------------------------------------- LLaVA


def llava_processor(tokenizer, vision_config):
    from transformers import LlavaProcessor

    image_processor = square_clip_image_processor(vision_config.image_size)
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
        chat_template=CHAT_TEMPLATE,
    )


def encode_turn(tokenizer, num_image_tokens: int, question: str, answer: str) -> tuple[list[int], list[int]]:
    """Token ids and LM labels (the answer only) of one image-question-answer turn, `<image>` expanded as
    `LlavaProcessor` expands it."""
    prompt = tokenizer(f"USER: {IMAGE_TOKEN * num_image_tokens}\n{question} ASSISTANT:")["input_ids"]
    reply = tokenizer(f" {answer}{tokenizer.eos_token}", add_special_tokens=False)["input_ids"]
    return prompt + reply, [-100] * len(prompt) + reply


def pretrain_llava(samples, pixels, tokenizer, clip, settings: Stage0Settings):
    """LLaVA at the tiny preset's size with the pretrained CLIP tower (frozen, as LLaVA-1.5 keeps it): the projector and
    LLaMA learn the image-text tasks. Returns the model and its `LlavaProcessor`."""
    from transformers import LlavaForConditionalGeneration

    config = PlumConfig.from_preset("tiny").llava_config
    fit_to_tokenizer(config, tokenizer)
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    model.model.vision_tower.requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = _optimizer(trained, settings.llava_learning_rate, settings.llava_steps)
    rng = np.random.default_rng(settings.seed + 1)
    features = frozen_vision_features(model, pixels)
    model.train()
    for _ in tqdm(range(settings.llava_steps), desc="stage 0: LLaVA", leave=False):
        picked = rng.choice(len(samples), settings.llava_batch_size, replace=False)
        turns = [tasks(samples[i][0], sorted(samples[i][2]), rng) for i in picked]
        encoded = [encode_turn(tokenizer, config.image_seq_length, q, a) for q, a in turns]
        batch = _padded(encoded, tokenizer.pad_token_id)
        embeds = inputs_embeds_with_image(model, batch.pop("input_ids"), features[picked])
        loss = model(inputs_embeds=embeds, **batch).loss
        _step(loss, trained, optimizer, scheduler)
    return model.eval(), llava_processor(tokenizer, config.vision_config)


def frozen_vision_features(model, pixels: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    """What LLaVA's projector reads from its frozen CLIP tower (the `vision_feature_layer` hidden states, CLS dropped by
    the "default" strategy), `(n, image tokens, vision hidden)`, computed once: the tower does not train, so every step
    would compute the same tensors again."""
    layer, strategy = model.config.vision_feature_layer, model.config.vision_feature_select_strategy
    outputs = []
    with torch.no_grad():
        for start in range(0, len(pixels), chunk):
            hidden = model.model.vision_tower(
                pixels[start : start + chunk], output_hidden_states=True
            ).hidden_states
            outputs.append(hidden[layer][:, 1:] if strategy == "default" else hidden[layer])
    return torch.cat(outputs)


def inputs_embeds_with_image(model, input_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """`(b, t, hidden)` LM inputs: token embeddings with each `<image>` position holding the projected `features`, as
    `LlavaModel` places `get_image_features`' output (its own placeholder mask, which checks the counts agree)."""
    embeds = model.get_input_embeddings()(input_ids)
    image = model.model.multi_modal_projector(features).to(embeds.dtype)
    return embeds.masked_scatter(model.model.get_placeholder_mask(input_ids, embeds, image), image)


def _padded(encoded, pad_id: int) -> dict:
    longest = max(len(ids) for ids, _ in encoded)
    return {
        "input_ids": torch.tensor([ids + [pad_id] * (longest - len(ids)) for ids, _ in encoded]),
        "attention_mask": torch.tensor([[1] * len(ids) + [0] * (longest - len(ids)) for ids, _ in encoded]),
        "labels": torch.tensor([labels + [-100] * (longest - len(labels)) for _, labels in encoded]),
    }


# ---------------------------------------------------------------------------------------------------- SAM


def box_prompts(masks: list[np.ndarray], rng, jitter: float = BOX_JITTER) -> torch.Tensor:
    """`(n, 4)` boxes `x0, y0, x1, y1` around each mask, each side moved by up to `jitter` of the box size (SAM's own
    box-prompt noise)."""
    boxes = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
        size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
        boxes.append(box + rng.uniform(-jitter, jitter, 4) * size)
    return torch.tensor(np.clip(boxes, 0, masks[0].shape[0]), dtype=torch.float32)


def _sam_batch(samples, picked, parts_per_image: int | None, rng, jitter: float = BOX_JITTER):
    """Images `(b, 3, S, S)` (0-255), and per prompt: its image's index, its box and its mask (`parts_per_image` parts
    of each image drawn at random; None: all of them)."""
    images = torch.stack([torch.from_numpy(samples[i][1]).permute(2, 0, 1).float() for i in picked])
    owners, boxes, masks = [], [], []
    for b, i in enumerate(picked):
        parts = list(samples[i][2].values())
        parts = [parts[k] for k in rng.permutation(len(parts))[:parts_per_image]]
        owners += [b] * len(parts)
        boxes.append(box_prompts(parts, rng, jitter))
        masks += parts
    return images, torch.tensor(owners), torch.cat(boxes), torch.from_numpy(np.stack(masks)).float()


def box_prompted_masks(sam: torch.nn.ModuleDict, images, owners, boxes) -> torch.Tensor:
    """`(n, 4h, 4w)` low-resolution mask logits of SAM for `n` box prompts: images `(b, 3, S, S)` (0-255), each prompt's
    image index `(n,)` and box `(n, 4)`; every prompt of every image in one decoder call."""
    mean, std = torch.tensor(SAM_PIXEL_MEAN)[:, None, None], torch.tensor(SAM_PIXEL_STD)[:, None, None]
    embeddings = sam["image_encoder"]((images - mean) / std)
    sparse, dense = sam["prompt_encoder"](points=None, boxes=boxes, masks=None)
    dense_pe = sam["prompt_encoder"].get_dense_pe()
    return decode_one_prompt_per_image(sam["mask_decoder"], embeddings[owners], dense_pe, sparse, dense)[:, 0]


def pretrain_sam(samples, settings: Stage0Settings) -> torch.nn.ModuleDict:
    """SAM at the tiny preset's geometry, trained on box-prompted part masks of the corpus (BCE + Dice on one mask per
    prompt, at the decoder's resolution), as `{image_encoder, prompt_encoder, mask_decoder}`: its state dict has
    segment_anything's key names."""
    image_encoder, prompt_encoder, mask_decoder = build_sam(PlumConfig.from_preset("tiny"))
    sam = torch.nn.ModuleDict(
        {"image_encoder": image_encoder, "prompt_encoder": prompt_encoder, "mask_decoder": mask_decoder}
    )
    sam.train()
    optimizer, scheduler = _optimizer(sam.parameters(), settings.sam_learning_rate, settings.sam_steps)
    rng = np.random.default_rng(settings.seed + 2)
    for _ in tqdm(range(settings.sam_steps), desc="stage 0: SAM", leave=False):
        picked = rng.choice(len(samples), settings.sam_batch_size, replace=False)
        images, owners, boxes, masks = _sam_batch(samples, picked, settings.sam_parts_per_image, rng)
        low_res = box_prompted_masks(sam, images, owners, boxes)
        # the masks at the decoder's resolution
        target = F.adaptive_avg_pool2d(masks[:, None], low_res.shape[-2:])[:, 0]
        loss = 2.0 * sigmoid_bce_loss(low_res, target) + 0.5 * dice_loss(low_res, target)
        _step(loss, sam.parameters(), optimizer, scheduler)
    return sam.eval()


def box_prompted_iou(sam: torch.nn.ModuleDict, samples, chunk: int = 20) -> dict:
    """How well the pretrained SAM segments a part from its exact box on held-out images: cumulative IoU (intersection
    over union, each summed over every part), beside the box itself taken as the mask, the baseline a model that
    ignores the image scores."""
    totals = {"sam": [0, 0], "box": [0, 0]}
    threshold = PlumConfig.from_preset("tiny").mask_threshold
    rng = np.random.default_rng(0)  # only orders each image's parts: the boxes are exact
    with torch.no_grad():
        for start in range(0, len(samples), chunk):
            picked = range(start, min(start + chunk, len(samples)))
            images, owners, boxes, masks = _sam_batch(samples, picked, None, rng, jitter=0.0)
            logits = box_prompted_masks(sam, images, owners, boxes)
            truth = masks > 0.5
            side = truth.shape[-1]  # the corpus images are SAM's input size: nothing to crop or resize
            upsampled = postprocess_masks(logits[:, None], side, (side, side), (side, side))[:, 0]
            predicted = upsampled > threshold
            ys, xs = torch.arange(truth.shape[-2])[:, None], torch.arange(truth.shape[-1])[None]
            x0, y0, x1, y1 = (boxes[:, k, None, None] for k in range(4))
            filled = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
            for name, mask in (("sam", predicted), ("box", filled)):
                totals[name][0] += int((mask & truth).sum())
                totals[name][1] += int((mask | truth).sum())
    return {
        "sam_box_prompt_iou": totals["sam"][0] / max(totals["sam"][1], 1),
        "box_as_mask_iou": totals["box"][0] / max(totals["box"][1], 1),
        "sam_eval_parts": sum(len(sample[2]) for sample in samples),
    }


# ---------------------------------------------------------------------------------------------------- the stage


def _language_job(out: str, settings: Stage0Settings) -> dict:
    """Job 1-2 (one process): tokenizer, CLIP, LLaVA; the LLaVA-HF folder saved to `out`, and CLIP's held-out check
    (`clip_zero_shot_naming`)."""
    torch.set_num_threads(1)
    torch.manual_seed(settings.seed)
    started = time.monotonic()
    samples = draw_corpus(settings.corpus_images)
    tokenizer = train_tiny_tokenizer(
        corpus_texts(samples), PlumConfig.from_preset("tiny").text_config.vocab_size, True
    )
    vision_config = PlumConfig.from_preset("tiny").llava_config.vision_config
    processor = llava_processor(tokenizer, vision_config)
    pixels = clip_pixels(processor.image_processor, samples)
    clip = pretrain_clip(samples, pixels, tokenizer, vision_config, settings)
    model, processor = pretrain_llava(samples, pixels, tokenizer, clip, settings)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    seconds = round(time.monotonic() - started, 1)
    held_out = draw_corpus(settings.clip_eval_images, HELD_OUT_SEED)
    return {
        "llava": out,
        "llava_seconds": seconds,
        **clip_zero_shot_naming(clip, tokenizer, processor.image_processor, held_out),
    }


def _sam_job(out: str, settings: Stage0Settings) -> dict:
    """Job 3 (one process): SAM, saved as a segment_anything state dict to `out`, and its held-out check
    (`box_prompted_iou`)."""
    torch.set_num_threads(1)
    torch.manual_seed(settings.seed)
    started = time.monotonic()
    sam = pretrain_sam(draw_corpus(settings.corpus_images), settings)
    torch.save({k: v.contiguous() for k, v in sam.state_dict().items()}, out)
    seconds = round(time.monotonic() - started, 1)
    held_out = draw_corpus(settings.sam_eval_images, HELD_OUT_SEED)
    return {"sam": out, "sam_seconds": seconds, **box_prompted_iou(sam, held_out)}


def run_stage0(folder, settings: Stage0Settings | None = None) -> dict:
    """Stage 0 into `folder/<fingerprint>/` (`llava/`, `sam_tiny.pth`, `stage0.json`); an earlier stage 0 with the same
    settings is reused. Returns `stage0.json`'s content (paths, seconds, the held-out checks of CLIP and SAM, settings)."""
    settings = settings or Stage0Settings()
    target = Path(folder) / settings.fingerprint()
    report = target / "stage0.json"
    if report.exists():
        logger.info("stage 0: reusing %s", target)
        return json.loads(report.read_text())
    partial = target.with_name(f".{target.name}.partial")
    partial.mkdir(parents=True, exist_ok=True)
    jobs = [(_language_job, str(partial / "llava")), (_sam_job, str(partial / "sam_tiny.pth"))]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pending = [pool.apply_async(job, (out, settings)) for job, out in jobs]
        result = {k: v for p in pending for k, v in p.get().items()}
    if target.exists():
        import shutil

        shutil.rmtree(target)
    partial.rename(target)
    # what the jobs reported, with their paths where the folder now is
    result = {
        **result,
        "llava": str(target / "llava"),
        "sam": str(target / "sam_tiny.pth"),
        "settings": asdict(settings),
    }
    report.write_text(json.dumps(result, indent=1))
    return result
