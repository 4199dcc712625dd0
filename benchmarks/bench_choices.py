"""Answer-choice scoring with the shared image + question prefix (one forward, KV cache reused by the 5
choices) against one full forward per choice, on the tiny PLUM with LLaVA-sized inputs: a 576-token image
prefix, a ~30-token question and five ~20-token answers (medians of calls taken in turns). Also counts SAM encoder
calls per image across five questions, and the parameters the KL teacher adds.

    python benchmarks/bench_choices.py [--repeats 20]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import add_out_argument, interleaved, write_results  # noqa: E402
from modeling_plum import PlumConfig, PlumForConditionalGeneration  # noqa: E402
from modeling_plum.scoring_plum import full_forward_log_likelihoods  # noqa: E402


def tiny_with_576_image_tokens():
    config = PlumConfig.from_preset("tiny")
    vision = config.llava_config.vision_config
    vision.image_size = 24 * vision.patch_size  # 24^2 = 576 patches, LLaVA-1.5's image prefix length
    config.llava_config.image_seq_length = (vision.image_size // vision.patch_size) ** 2
    torch.manual_seed(0)
    return PlumForConditionalGeneration(config).eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    add_out_argument(parser, __file__)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = tiny_with_576_image_tokens()
    config = model.config
    image_tokens = config.llava_config.image_seq_length
    vocab = config.text_config.vocab_size - 1  # the last id is the image token
    generator = torch.Generator().manual_seed(0)
    question = torch.randint(3, vocab, (30,), generator=generator)
    prompt = torch.cat([torch.tensor([1]), torch.full((image_tokens,), config.image_token_index), question])[
        None
    ]
    mask = torch.ones_like(prompt)
    side = config.llava_config.vision_config.image_size
    pixels = torch.randn(1, 3, side, side, generator=generator)
    choices = [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in (18, 20, 21, 19, 22)]

    seconds, scores = interleaved(
        {
            "shared": lambda: model.score_choices(prompt, mask, pixels, choices),
            "full": lambda: full_forward_log_likelihoods(
                model.llava, {"input_ids": prompt, "attention_mask": mask, "pixel_values": pixels}, choices
            ),
        },
        args.repeats,
    )
    (shared_s, shared), (full_s, full) = ((seconds[k], scores[k]) for k in ("shared", "full"))
    assert torch.allclose(shared, full, atol=1e-4), (shared, full)
    print(
        f"prompt {prompt.shape[1]} tokens ({image_tokens} image + {len(question)} question + BOS), 5 choices of "
        f"{min(map(len, choices))}-{max(map(len, choices))} tokens, same scores from both:"
    )
    print(f"  shared prefix + KV cache  {shared_s * 1e3:8.1f} ms / question")
    print(
        f"  one full forward a choice {full_s * 1e3:8.1f} ms / question  -> shared prefix is {full_s / shared_s:.2f}x faster"
    )

    calls = []
    model.sam_image_encoder.patch_embed.register_forward_hook(lambda *a: calls.append(1))
    sam_pixels = torch.randn(1, 3, config.sam_image_size, config.sam_image_size, generator=generator)
    with torch.no_grad():
        embeddings = model.get_image_embeddings(sam_pixels)
        for _ in range(5):  # five questions about the same image, each with its spans
            model.segment_spans(
                prompt, mask, pixels, [(1, 3), (5, 7)], (128, 128), (128, 128), image_embeddings=embeddings
            )
    print(f"SAM image-encoder calls for one image across 5 questions: {len(calls)}")

    from peft import LoraConfig, get_peft_model

    base = sum(p.numel() for p in model.parameters())
    lora = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules=r".*\.language_model\..*\.(q_proj|v_proj)")
    )
    added = sum(p.numel() for n, p in lora.named_parameters() if "lora_" not in n) - base
    snapshot = PlumForConditionalGeneration(PlumConfig(**{**config.to_dict(), "kl_frozen_snapshot": True}))
    snapshot_added = sum(p.numel() for p in snapshot.kl_teacher.parameters())
    print(
        f"parameters added by the KL teacher: {added} with LoRA (adapters disabled); "
        f"{snapshot_added:,} with an explicit frozen snapshot (a full language-model copy)"
    )
    write_results(
        args.out,
        {
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
            "timing": "median of interleaved calls",
        },
        {
            "prompt_tokens": prompt.shape[1],
            "image_tokens": image_tokens,
            "question_tokens": len(question),
            "choice_tokens": [len(c) for c in choices],
            "shared_prefix_ms": shared_s * 1e3,
            "full_forward_ms": full_s * 1e3,
            "shared_prefix_speedup": full_s / shared_s,
            "sam_encoder_calls_5_questions": len(calls),
            "kl_teacher_parameters_lora": added,
            "kl_teacher_parameters_snapshot": snapshot_added,
        },
    )


if __name__ == "__main__":
    main()
