"""kdutils: the helper package of the knowledge-distillation course.

Modules, each one concept:

* ``runtime``  -- profile (smoke/full), seed, device, Colab, where results go
* ``checks``   -- the input checks and reductions every loss and metric shares (one place)
* ``losses``   -- KL, soft cross-entropy, Hinton's distillation loss, generalized JSD
* ``feature_losses`` -- FitNets hints (with a regressor), hidden-state cosine, attention transfer
* ``token_losses`` -- language models at scale: top-k (sparse) teachers with a tail bucket, a chunked
  large-vocabulary loss that never builds the (N, V) logits, vocabulary-size checks
* ``data``     -- digits and MNIST-1D, offline, cached; CIFAR-10 read from disk and its embedded fallback
* ``models``   -- the teachers and students of the course
* ``train``    -- every training loop: fit (labels) and distil (a teacher) on one loop, fit_next_token, the full run's train_step
* ``metrics``  -- accuracy, fidelity (agreement, predictive KL), calibration, linear CKA
* ``stats``    -- is a difference real? arms compared over seeds (Welch, paired), Holm's correction, equivalence
* ``diagnose`` -- is the student trained on what it will see when deployed?
* ``sensors``  -- the two-sensor task of notebook 05 and assignment a2 (x and its simplified x')
* ``tasks``    -- the toy instruction language of notebook 06
* ``brackets`` -- a language whose grammar lives in what was written (two kinds of brackets), notebook 08
* ``onpolicy`` -- on-policy distillation: the student samples, the teacher grades every token it wrote
* ``speculative`` -- speculative sampling: a draft proposes, the target verifies; acceptance = 1 - TV
* ``wordlang`` -- a small language of English words, as text, with its true likelihood (notebook 11)
* ``cross_tokenizer`` -- distilling across tokenizers: the guard, the word projection, universal logit distillation
* ``hf``       -- the course's distillation in Hugging Face transformers (tokenizers trained here, a Trainer whose
  loss is exact under gradient accumulation); the only module that imports transformers (the ``[hf]`` extra)
* ``zoo``      -- trained teachers the course reuses, trained once and cached
* ``loader``   -- batches of images kept on the device, augmented there (the full run's data path)
* ``checkpoint`` -- atomic saves and safe (weights_only) loads that refuse a bad file and leave it alone
* ``fullrun``  -- the full GPU teacher -> student run of notebook 09: config, checkpointed run, DDP, CLI
* ``report``   -- save a notebook's figures as JSON; its primary claims, checked and registered

The course tooling (running the notebooks, Colab set-up cells, grading) lives apart, in
``kdutils.course``; nothing here imports it.
"""
from . import data, feature_losses, losses, metrics, report, runtime, stats, token_losses  # noqa: F401

__version__ = "0.1.0"
