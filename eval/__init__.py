"""Spatial-reasoning benchmarks for CLIP-like models, scored by the official definitions.

- `eval.benchmarks.BENCHMARKS`: name -> `run(scorer, data_root, *, label_fixes) -> BenchmarkResult`
  (families: `eval.whatsup`, `eval.spatial_qa`, `eval.mmvp_vlm`; shared pieces in `eval.common`).
- `eval.scoring.ModelScorer`: a `models` bundle as a scorer (fixed chunks, torch.distributed, image cache).
- `eval.llava`: LLaVA-style MLLMs through transformers' Llava classes, the paper's protocols (Appendix A).
- `eval.run`: the command line (`python -m eval.run --run runs/<name>` or `--model NAME --out DIR`).

Importing this package imports neither accelerate nor wandb (nor `models`).
"""
