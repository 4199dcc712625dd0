"""Models and files in real formats, built offline for tests and benchmarks (which import them from here, never from
`tests/`):

- `tiny_vlms`: tiny random image-text-to-text models of two real architectures (LLaVA-1.5, Qwen2-VL) with their real
  processors and chat templates;
- `real_geometry`: an HF LLaVA-1.5 folder of the real geometry at shallow depth, an official-format SAM checkpoint,
  the reference PLUM's checkpoint layout, and a peak-memory reader.
"""
