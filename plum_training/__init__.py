"""The pieces of `train_accelerate.py` and `eval_partonomy.py`: data (rows → batches), model loading (with the
`--trust_remote_code` gate, devices and dtypes), checkpoints (training state only, exports, resumption), Hub uploads,
the per-update log history, and answer-choice scoring."""
